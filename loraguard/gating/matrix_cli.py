"""`loraguard matrix`: the invariant suite (and a baseline comparison) across library releases, one environment
each, printed as a release x invariant table with the first release where each invariant changes state."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from loraguard.gating.formats import FORMATS

HELP = "Run the invariant suite across peft releases, each in its own environment (slow; needs uv)."


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
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per release (default: 2)")
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
    parser.add_argument("--format", choices=FORMATS, default="text", help="table format")
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
    from loraguard.gating.environments import EnvSetupError, parse_version, release
    from loraguard.gating.formats import render
    from loraguard.gating.matrix import load_results, run_release, save_results

    try:
        if args.from_results:
            results = load_results(args.from_results)
        else:
            if not args.release:
                raise ValueError("name the releases to test with --release (at least two to see changes)")
            project = Path(__file__).resolve().parents[2]
            if not (project / "pyproject.toml").exists():
                raise ValueError(f"{project} is not a loraguard source checkout; run the matrix from one")
            overrides = _overrides(args.companion)
            releases = [release(v, overrides) for v in sorted(set(args.release), key=parse_version)]
            baseline = args.baseline.resolve() if args.baseline else None
            results = []
            for rel in releases:
                print(f"peft {rel.version} ({', '.join(rel.requirements)}) ...", file=sys.stderr, flush=True)
                results.append(
                    run_release(rel, args.envs, args.out.resolve(), project, args.profile, args.workers, baseline)
                )
            args.out.mkdir(parents=True, exist_ok=True)
            save_results(results, args.out / "results.json")
    except (ValueError, EnvSetupError) as err:
        print(f"loraguard matrix: {err}", file=sys.stderr)
        return 2
    print(render(args.format, matrix_table, results))
    return 1 if any(r.error for r in results) else 0
