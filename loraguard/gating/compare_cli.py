"""`loraguard compare DIR`: the installed release against a baseline; exit 1 on drift not in DIR/accepted.txt."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loraguard.core.vocabulary import format_option
from loraguard.gating.formats import FORMATS

HELP = "Compare the installed library release with a baseline from `loraguard snapshot`; exit 1 on drift."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", type=Path, help="snapshot directory (with manifest.json)")
    parser.add_argument(
        "--backend", default="peft", help="reference, peft, an entry-point name or module:attr (default: peft)"
    )
    format_option(parser, FORMATS)
    parser.add_argument(
        "--notes", action="store_true", help="text format: also print every output difference and new field"
    )


def run(args: argparse.Namespace) -> int:
    from loraguard.backends import BackendError, load_backend
    from loraguard.core.heap import importing
    from loraguard.gating import report
    from loraguard.gating.compare import compare_snapshot
    from loraguard.gating.formats import render
    from loraguard.gating.layout import SnapshotError

    try:
        with importing():  # this command's process is loraguard's own (loraguard.core.heap)
            backend = load_backend(args.backend)
        comparison = compare_snapshot(backend, args.baseline)
    except (SnapshotError, BackendError, ValueError) as err:
        print(f"loraguard compare: {err}", file=sys.stderr)
        return 2
    print(render(args.format, report, comparison, notes=args.notes))
    return 1 if comparison.failed else 0
