"""The release matrix: in each release's environment, run the invariant suite (read back from its JUnit XML) and,
given a baseline, the comparison; collect one `ReleaseResult` per release."""

from __future__ import annotations

import ast
import json
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loraguard.gating.environments import EnvSetupError, Release, find_links, make_env

_VERSIONS = (
    "import json, platform, torch, peft, transformers; print(json.dumps({'peft': peft.__version__, "
    "'transformers': transformers.__version__, 'torch': torch.__version__, 'python': platform.python_version()}))"
)


@dataclass
class ReleaseResult:
    """What one release did: per invariant, counts of outcomes and the failing tests; the baseline verdict."""

    release: str
    environment: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)  # invariant -> failing test ids
    baseline: dict | None = None  # `loraguard compare --format json` output
    error: str | None = None  # the release could not be installed or run


def read_junit(path: Path) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    """Per invariant, outcome counts and failing test names, from a `pytest --loraguard --junitxml` report.

    The plugin tags each loraguard test with a ``loraguard`` property ``(invariant, backend)``; others are ignored.
    """
    outcomes: dict[str, Counter] = {}
    failures: dict[str, list[str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = [v for p in case.iter("property") if p.get("name") == "loraguard" and (v := p.get("value")) is not None]
        if not tags:
            continue
        invariant = ast.literal_eval(tags[0])[0]
        children = {child.tag for child in case}
        state = "failed" if children & {"failure", "error"} else "skipped" if "skipped" in children else "passed"
        outcomes.setdefault(invariant, Counter())[state] += 1
        if state == "failed":
            failures.setdefault(invariant, []).append(case.get("name", ""))
    return {k: dict(v) for k, v in outcomes.items()}, failures


def run_release(
    rel: Release,
    envs: Path,
    out: Path,
    loraguard: list[str],
    profile: str,
    workers: int,
    baseline: Path | None,
    step: Callable[[str], None] = lambda label: None,
) -> ReleaseResult:
    """Install `rel` (and `loraguard`, a requirement) in its environment, run the suite and the comparison there,
    and read back their reports; `step(label)` is told as each stage starts."""
    result = ReleaseResult(rel.version)
    folder = out / f"peft-{rel.version}"
    folder.mkdir(parents=True, exist_ok=True)
    step(f"peft {rel.version}: environment")
    try:
        python = make_env(envs, rel, loraguard, find_links())
    except EnvSetupError as err:
        result.error = str(err)
        return result
    try:
        result.environment = json.loads(_capture([str(python), "-c", _VERSIONS], folder, folder / "versions.log"))
    except json.JSONDecodeError:
        result.error = f"the environment does not import peft, transformers and torch; see {folder / 'versions.log'}"
        return result
    junit = folder / "junit.xml"
    junit.unlink(missing_ok=True)
    # the baseline is compared below, with drift kinds; its pytest form would only repeat it as skips here
    step(f"peft {rel.version}: pytest --loraguard")
    _capture(
        [
            str(python),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--loraguard",
            "--loraguard-backend",
            "peft",
            f"--loraguard-profile={profile}",
            f"--loraguard-reproducers={folder / 'reproducers'}",
            "-k",
            "not test_baseline",
            "-n",
            str(workers),
            "-q",
            f"--junitxml={junit}",
        ],
        folder,
        folder / "pytest.log",
    )
    if not junit.exists():
        result.error = f"pytest wrote no report; see {folder / 'pytest.log'}"
        return result
    result.outcomes, result.failures = read_junit(junit)
    if baseline is not None:
        step(f"peft {rel.version}: compare with the baseline")
        text = _capture(
            [str(python), "-m", "loraguard", "compare", str(baseline), "--format", "json"],
            folder,
            folder / "compare.log",
        )
        try:
            result.baseline = json.loads(text)
        except json.JSONDecodeError:
            result.baseline = {"error": f"the comparison did not run; see {folder / 'compare.log'}"}
    return result


def _capture(cmd: list[str], cwd: Path, log: Path) -> str:
    """Run `cmd`, keep its stdout and stderr in `log`, and return stdout (its exit code is read from reports)."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    log.write_text(f"$ {' '.join(cmd)}\n[exit {done.returncode}]\n{done.stdout}\n{done.stderr}")
    return done.stdout


def save_results(results: list[ReleaseResult], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in results], indent=2, sort_keys=True) + "\n")


def load_results(path: Path) -> list[ReleaseResult]:
    """Results saved by a previous `loraguard matrix` run (to render them again, or to test the table)."""
    try:
        return [ReleaseResult(**r) for r in json.loads(path.read_text())]
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: not a results file written by `loraguard matrix` ({err})") from None
