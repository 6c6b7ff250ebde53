"""The `loraguard` command. Each subcommand lives in its own module, imported only when it runs.

A command module provides ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int`` (the exit code).
Exit codes across commands: 0 success, 1 findings or failures, 2 unusable input or usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: subcommand name -> module implementing it
COMMANDS: dict[str, str] = {
    "demo": "loraguard.frontends.demo",
    "audit": "loraguard.audit.cli",
    "audit-merge": "loraguard.audit.merge_cli",
    "snapshot": "loraguard.gating.snapshot_cli",
    "compare": "loraguard.gating.compare_cli",
    "matrix": "loraguard.gating.matrix_cli",
}


def build_parser() -> argparse.ArgumentParser:
    from loraguard import __version__

    parser = argparse.ArgumentParser(prog="loraguard", description="Verify LoRA libraries and audit LoRA checkpoints.")
    parser.add_argument("--version", action="version", version=f"loraguard {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.configure(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
