"""`loraguard snapshot --out DIR`: record what the installed release does with the zoo (and your models)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loraguard.core.vocabulary import dtype_option

if TYPE_CHECKING:
    from loraguard.harness.settings import Settings

HELP = "Record a baseline of the installed library release, for upgrade gating (docs/gating.md)."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="snapshot directory to write (commit it)")
    parser.add_argument(
        "--force", action="store_true", help="replace the snapshot already in DIR (accepted.txt is kept)"
    )
    add_scenario_options(parser)


def add_scenario_options(parser: argparse.ArgumentParser) -> None:
    """Options naming the backend and, for a snapshot, its scenarios; the same names as the pytest plugin's."""
    parser.add_argument(
        "--backend", default="peft", help="reference, peft, an entry-point name or module:attr (default: peft)"
    )
    parser.add_argument(
        "--zoo",
        action="append",
        default=[],
        help="built-in model to record (repeatable; default: all; none: only --model's)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="your model, module:factory returning a loraguard.harness.zoo.ZooModel, added to the zoo (repeatable)",
    )
    dtype_option(parser, "f32 and bf16")


def settings_from(args: argparse.Namespace) -> Settings:
    """Resolve the options as the plugin resolves its own (profile "ci"), so both record the same scenarios."""
    from loraguard.core.heap import importing
    from loraguard.harness.settings import RunOptions, resolve

    with importing():  # this command's process is loraguard's own (loraguard.core.heap)
        opts = RunOptions(backends=[args.backend], dtypes=args.dtype, zoo=args.zoo, models=args.model, prefix="--")
        return resolve(opts)


def run(args: argparse.Namespace) -> int:
    from loraguard.backends import BackendError
    from loraguard.gating.layout import SnapshotError
    from loraguard.gating.snapshot import take_snapshot

    try:
        settings = settings_from(args)
        backend = settings.backends[0]
        manifest = take_snapshot(backend, settings.scenarios, args.out, settings.model_origins, args.force)
    except (SnapshotError, BackendError, ValueError) as err:
        print(f"loraguard snapshot: {err}", file=sys.stderr)
        return 2
    print(f"recorded {len(manifest.scenarios)} scenarios with {backend.name} {backend.version()} in {args.out}")
    for scenario, why in sorted(manifest.skipped.items()):
        print(f"  not recorded: {scenario}: {why}")
    return 0
