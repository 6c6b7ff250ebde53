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

#: Read from the installed distributions, without importing them: importing torch, peft and transformers once more
#: cost up to two minutes per release on a loaded machine (the suite's own run imports them anyway).
_VERSIONS = (
    "import json, platform; from importlib.metadata import version; "
    "print(json.dumps({**{n: version(n) for n in ('peft', 'transformers', 'torch')}, "
    "'python': platform.python_version()}))"
)


@dataclass(frozen=True)
class Suite:
    """What each release's `pytest --loraguard` run checks (profile, and the zoo models and dtypes it narrows to;
    empty: the profile's), with how many pytest-xdist workers (0: in the pytest process itself), and whether each
    failing test leaves a reproducer (confirmed in a fresh interpreter: seconds to a minute per failing test)."""

    profile: str = "ci"
    zoo: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ()
    workers: int = 2
    reproducers: bool = True

    def pytest_args(self, folder: Path) -> list[str]:
        """The plugin's options for this suite (reproducers under `folder`), and xdist's."""
        args = [f"--loraguard-profile={self.profile}"]
        args += [f"--loraguard-zoo={name}" for name in self.zoo] + [f"--loraguard-dtype={d}" for d in self.dtypes]
        args.append(f"--loraguard-reproducers={folder / 'reproducers' if self.reproducers else 'off'}")
        return args + (["-n", str(self.workers)] if self.workers else [])


@dataclass
class ReleaseResult:
    """What one release did: per invariant, counts of outcomes and the failing tests; the baseline verdict."""

    release: str
    environment: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)  # invariant -> failing test ids
    baseline: dict | None = None  # `loraguard compare --format json` output
    error: str | None = None  # the release could not be installed or run
    suite: dict[str, object] = field(default_factory=dict)  # the `Suite` it ran (empty in results before it)


def read_junit(path: Path) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    """Per invariant, outcome counts and failing test names, from a `pytest --loraguard --junitxml` report.

    The plugin tags each loraguard test with a ``loraguard`` property ``(invariant, backend)``; others are ignored.
    A known failure (pytest's xfail, which JUnit writes as a skip) is what the release does: it counts as failed,
    and also under ``known``.
    """
    outcomes: dict[str, Counter] = {}
    failures: dict[str, list[str]] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        tags = [v for p in case.iter("property") if p.get("name") == "loraguard" and (v := p.get("value")) is not None]
        if not tags:
            continue
        invariant = ast.literal_eval(tags[0])[0]
        children = {child.tag for child in case}
        known = any(child.get("type") == "pytest.xfail" for child in case.iter("skipped"))
        state = (
            "failed" if known or children & {"failure", "error"} else "skipped" if "skipped" in children else "passed"
        )
        outcomes.setdefault(invariant, Counter())[state] += 1
        if known:
            outcomes[invariant]["known"] += 1
        if state == "failed":
            failures.setdefault(invariant, []).append(case.get("name", ""))
    return {k: dict(v) for k, v in outcomes.items()}, failures


def run_release(
    rel: Release,
    envs: Path,
    out: Path,
    loraguard: list[str],
    suite: Suite,
    baseline: Path | None,
    step: Callable[[str], None] = lambda label: None,
    reinstall: bool = False,
) -> ReleaseResult:
    """Install `rel` (and `loraguard`, a requirement) in its environment, run the suite and the comparison there,
    and read back their reports; `step(label)` is told as each stage starts."""
    result = ReleaseResult(rel.version, suite=asdict(suite))
    folder = out / f"peft-{rel.version}"
    folder.mkdir(parents=True, exist_ok=True)
    step(f"peft {rel.version}: environment")
    try:
        python = make_env(envs, rel, loraguard, find_links(), reinstall)
    except EnvSetupError as err:
        result.error = str(err)
        return result
    try:
        result.environment = json.loads(_capture([str(python), "-c", _VERSIONS], folder, folder / "versions.log"))
    except json.JSONDecodeError:
        result.error = f"the environment lacks peft, transformers or torch; see {folder / 'versions.log'}"
        return result
    junit = folder / "junit.xml"
    junit.unlink(missing_ok=True)
    # the baseline is compared below, with drift kinds; its pytest form would only repeat it as skips here
    step(f"peft {rel.version}: pytest --loraguard")
    done = _run(
        [
            str(python),
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--loraguard",
            "--loraguard-backend",
            "peft",
            *suite.pytest_args(folder),
            "-k",
            "not test_baseline",
            "-q",
            f"--junitxml={junit}",
        ],
        folder,
        folder / "pytest.log",
    )
    if done.returncode not in (0, 1) or not junit.exists():  # 2-5: interrupted, internal or usage error, no tests
        result.error = f"pytest stopped (exit {done.returncode}) before the suite ran; see {folder / 'pytest.log'}"
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
    return _run(cmd, cwd, log).stdout


def _run(cmd: list[str], cwd: Path, log: Path) -> subprocess.CompletedProcess[str]:
    """Run `cmd` in `cwd`, keeping the command, its exit code, stdout and stderr in `log`."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    log.write_text(f"$ {' '.join(cmd)}\n[exit {done.returncode}]\n{done.stdout}\n{done.stderr}")
    return done


def save_results(results: list[ReleaseResult], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in results], indent=2, sort_keys=True) + "\n")


def load_results(path: Path) -> list[ReleaseResult]:
    """Results saved by a previous `loraguard matrix` run (to render them again, or to test the table)."""
    try:
        return [ReleaseResult(**r) for r in json.loads(path.read_text())]
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise ValueError(f"{path}: not a results file written by `loraguard matrix` ({err})") from None
