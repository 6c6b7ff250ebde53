"""`loraguard audit-merge --base B --adapter A --merged M`: check a merged model against W + s * B @ A, streaming.

Imports nothing heavy at module top: the main CLI imports every command module to build its parser.
"""

from __future__ import annotations

import argparse
import sys

from loraguard.audit.cli import add_report_options, report_format

HELP = "Check that a merged model equals base + s * B @ A tensor by tensor, and that the merge was not a no-op."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base", required=True, help="base model: *.safetensors, *.safetensors.index.json or its directory"
    )
    parser.add_argument(
        "--adapter", required=True, help="adapter directory (adapter_config.json + adapter_model.safetensors)"
    )
    parser.add_argument("--merged", required=True, help="merged model, in the same forms as --base")
    add_report_options(parser)


def run(args: argparse.Namespace) -> int:
    from loraguard.audit.merge import audit_merge
    from loraguard.audit.report import exit_code, render

    result = audit_merge(args.base, args.adapter, args.merged)
    sys.stdout.write(render(result, report_format(args.format), args.fail_on))
    return exit_code(result, args.fail_on)
