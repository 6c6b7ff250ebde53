"""`loraguard matrix`: the invariant suite (and a baseline comparison) across library releases, one environment
each, printed as a release x invariant table with the first release where each invariant changes state."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loraguard.core.progress import on_terminal
from loraguard.core.vocabulary import dtype_option, format_option
from loraguard.gating.environments import EnvSetupError
from loraguard.gating.formats import FORMATS

if TYPE_CHECKING:
    from loraguard.gating.matrix import Suite

HELP = "Run the invariant suite across peft releases, each in its own environment (slow; needs loraguard[matrix])."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--release",
        action="append",
        default=[],
        metavar="VERSION",
        help="peft release to test, e.g. 0.14.0 (repeatable; ordered by version)",
    )
    parser.add_argument(
        "--companion",
        action="append",
        default=[],
        metavar="VERSION=REQUIREMENT",
        help="install REQUIREMENT beside that release instead of the default pins (repeatable)",
    )
    parser.add_argument("--baseline", type=Path, help="also compare each release with this snapshot")
    parser.add_argument("--profile", default="ci", help="loraguard profile for the suite (default: ci)")
    parser.add_argument(
        "--zoo",
        action="append",
        default=[],
        metavar="MODEL",
        help="run the suite on this built-in zoo model only (repeatable; default: the profile's models)",
    )
    dtype_option(parser, "the profile's dtypes; given, the suite runs in these only")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="pytest-xdist workers per release (default: 2; 0: no xdist, one process, which starts faster)",
    )
    parser.add_argument(
        "--no-reproducers",
        dest="reproducers",
        action="store_false",
        help="write no reproducer per failing test (each is confirmed in a fresh interpreter, seconds to a minute "
        "each: the bulk of the time on old releases with many failures); outcomes and failing tests are the same",
    )
    parser.add_argument(
        "--reinstall",
        action="store_true",
        help="install each release's packages again even if its environment already has them",
    )
    parser.add_argument(
        "--envs",
        type=Path,
        default=Path.home() / ".cache" / "loraguard" / "envs",
        help="where the per-release environments live (reused between runs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".loraguard/matrix"),
        help="where reports, logs and results.json are written (default: .loraguard/matrix)",
    )
    format_option(parser, FORMATS)
    parser.add_argument(
        "--html",
        type=Path,
        metavar="PATH",
        help="where to write the page with the release x invariant plot (default: OUT/matrix.html; "
        "with --from-results, only when given)",
    )
    parser.add_argument(
        "--from-results",
        type=Path,
        metavar="RESULTS_JSON",
        help="render a previous run's results.json instead of running anything",
    )


def _overrides(specs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for spec in specs:
        version, eq, requirement = spec.partition("=")
        if not eq or not requirement:
            raise ValueError(f"--companion {spec!r}: use VERSION=REQUIREMENT, e.g. 0.10.0=transformers==4.46.3")
        out.setdefault(version, []).append(requirement)
    return out


def run(args: argparse.Namespace) -> int:
    from loraguard.gating import matrix_table
    from loraguard.gating.formats import render
    from loraguard.gating.matrix import load_results, save_results

    try:
        results = load_results(args.from_results) if args.from_results else _run_releases(args)
    except (ValueError, EnvSetupError) as err:
        print(f"loraguard matrix: {err}", file=sys.stderr)
        return 2
    if not args.from_results:
        args.out.mkdir(parents=True, exist_ok=True)
        save_results(results, args.out / "results.json")
    page = args.html or (None if args.from_results else args.out / "matrix.html")
    print(render(args.format, matrix_table, results))
    if page is not None:
        write_page(results, page)
        print(f"loraguard matrix: the plot and the table are in {page}", file=sys.stderr)
    return 1 if any(r.error for r in results) else 0


def _run_releases(args: argparse.Namespace) -> list:
    """Make each release's environment and run the suite (and the comparison) in it, with progress."""
    from loraguard.core.progress import steps
    from loraguard.gating.environments import loraguard_requirement, parse_version, release, uv_command
    from loraguard.gating.matrix import run_release, save_results

    if not args.release:
        raise ValueError("name the releases to test with --release (at least two to see changes)")
    suite = _suite(args)
    uv_command()  # fail before anything else if uv is missing
    loraguard = loraguard_requirement()
    overrides = _overrides(args.companion)
    releases = [release(v, overrides) for v in sorted(set(args.release), key=parse_version)]
    baseline = args.baseline.resolve() if args.baseline else None
    stages = 3 if baseline else 2
    results = []
    with steps("matrix", len(releases) * stages) as step:
        for rel in releases:
            if not on_terminal():
                print(f"peft {rel.version} ({', '.join(rel.requirements)}) ...", file=sys.stderr, flush=True)
            results.append(
                run_release(rel, args.envs, args.out.resolve(), loraguard, suite, baseline, step, args.reinstall)
            )
            save_results(results, args.out / "results.json")  # kept as each release ends, should the run stop
    return results


def _suite(args: argparse.Namespace) -> Suite:
    """The suite each release runs, from the options; a misspelt profile or model is refused here (a dtype by
    its option's choices), before
    any environment is made, naming the option."""
    from loraguard.gating.matrix import Suite
    from loraguard.harness.settings import PROFILES
    from loraguard.harness.zoo import ZOO

    if args.profile not in PROFILES:
        raise ValueError(f"--profile {args.profile!r}: choose one of {sorted(PROFILES)}")
    unknown = [name for name in args.zoo if name not in ZOO]
    if unknown:
        raise ValueError(f"--zoo {unknown[0]!r}: choose from {sorted(ZOO)}")
    if args.workers < 0:
        raise ValueError(f"--workers {args.workers}: give a number of pytest-xdist workers, 0 for none")
    return Suite(args.profile, tuple(args.zoo), tuple(args.dtype), args.workers, args.reproducers)


def write_page(results: list, path: Path) -> Path:
    """The HTML page with the release x invariant plot (matrix_page)."""
    from loraguard.gating.matrix_page import render_html

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results))
    return path
