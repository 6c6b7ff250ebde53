"""The CI recipes (examples/github-actions/loraguard.yml, .pre-commit-hooks.yaml) run as written, so none can rot.

The workflow's `run:` steps run in order, each with GitHub's shell (``bash -eo pipefail``) and the workflow's
``env``, in a small user project: committed adapters, a baseline recorded with the installed peft, and this
environment's ``loraguard`` and ``pytest`` on PATH. The install steps are not run (they download from the network;
this environment is what they install), which `test_every_step_is_run_or_listed_with_a_reason` keeps honest.
The fast test narrows `pytest --loraguard` through the project's pytest.ini (the reference backend, one zoo
model, one invariant, and xdist's ``--maxprocesses 1``: the recipe's ``-n 2`` then starts one worker, as a second
one would add only its start-up to a handful of tests) to fit `make test`; the slow one runs the recipe's suite as
is, on the installed peft, with two workers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from loraguard.frontends.cli import main

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "github-actions" / "loraguard.yml"
HOOKS = ROOT / ".pre-commit-hooks.yaml"

#: workflow steps not run here, and why
NOT_RUN = {
    "Install torch (CPU build only)": "downloads torch from the PyTorch CPU index; this environment has torch CPU",
    "Install loraguard (and your project's pins, e.g. peft)": "installs from a git URL; this environment has it",
}
#: what the fast test's project narrows `pytest --loraguard` to, through its pytest.ini (the slow test does not)
NARROW_INI = """[pytest]
loraguard_backend = reference
loraguard_profile = quick
loraguard_zoo = mlp
addopts = -k "test_zoo and merge-forward" --maxprocesses 1
"""


def _workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _steps() -> list[dict]:
    [job] = _workflow()["jobs"].values()
    return job["steps"]


def _env(project: Path) -> dict[str, str]:
    """The machine's environment with this Python's scripts first on PATH, a step summary file, the workflow's env."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["GITHUB_STEP_SUMMARY"] = str(project / "step-summary.md")
    env.update({k: str(v) for k, v in _workflow().get("env", {}).items()})
    return env


def _bash(script: str, cwd: Path, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    """Run a `run:` block as GitHub does: bash --noprofile --norc -eo pipefail."""
    cmd = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _user_project(root: Path, narrow: bool) -> Path:
    """A project as the workflow expects it: adapters/ with one adapter, a baseline under gating/, a pytest.ini."""
    from loraguard.frontends.demo import _save_good_adapter

    root.mkdir()
    _save_good_adapter(root / "adapters" / "mlp-adapter")
    (root / "pytest.ini").write_text(NARROW_INI if narrow else "[pytest]\n")
    assert main(["snapshot", "--out", str(root / "gating" / "baseline"), "--zoo", "mlp", "--dtype", "f32"]) == 0
    return root


def test_every_step_is_run_or_listed_with_a_reason() -> None:
    runs = [s["name"] for s in _steps() if "run" in s]
    assert set(NOT_RUN) <= set(runs), f"NOT_RUN names steps the workflow no longer has: {set(NOT_RUN) - set(runs)}"
    assert all(s.get("name") or "uses" in s for s in _steps()), "give every step a name"
    assert "download.pytorch.org/whl/cpu" in next(s["run"] for s in _steps() if "torch" in s.get("name", "").lower())


def _run_workflow(project: Path, timeout: int) -> list[tuple[str, subprocess.CompletedProcess[str]]]:
    ran = []
    for step in _steps():
        if "run" not in step or step["name"] in NOT_RUN:
            continue
        done = _bash(step["run"], project, _env(project), timeout)
        ran.append((step["name"], done))
        assert done.returncode == 0, f"step {step['name']!r} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return ran


def _check_outputs(project: Path) -> None:
    """What the `uses:` steps read exists: the SARIF the upload step names, the summary the job page shows."""
    upload = next(s for s in _steps() if "upload-sarif" in s.get("uses", ""))
    sarif = json.loads((project / upload["with"]["sarif_file"]).read_text())
    assert sarif["version"] == "2.1.0" and sarif["runs"][0]["tool"]["driver"]["name"] == "loraguard"
    assert "mlp-r4-f32" in (project / "step-summary.md").read_text()


@pytest.mark.spawns
def test_the_workflow_runs_green_in_a_user_project(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    project = _user_project(tmp_path / "project", narrow=True)
    ran = _run_workflow(project, timeout=300)
    assert [name for name, _ in ran] == [s["name"] for s in _steps() if "run" in s and s["name"] not in NOT_RUN]
    _check_outputs(project)
    suite = dict(ran)["Invariant suite against the installed peft"].stdout
    assert "loraguard summary (reference" in suite


@pytest.mark.slow
def test_the_workflow_as_written_on_the_installed_peft(tmp_path: Path) -> None:
    """The recipe's suite with nothing narrowed: the ci profile, reference and the installed peft (about 2 min)."""
    pytest.importorskip("peft")
    project = _user_project(tmp_path / "project", narrow=False)
    ran = dict(_run_workflow(project, timeout=900))
    _check_outputs(project)
    assert "loraguard summary (reference" in ran["Invariant suite against the installed peft"].stdout
    assert "peft" in ran["Invariant suite against the installed peft"].stdout


@pytest.mark.spawns
def test_the_audit_step_fails_the_job_on_a_damaged_adapter(tmp_path: Path) -> None:
    from loraguard.frontends.demo import _damaged_copy, _save_good_adapter

    project = tmp_path / "project"
    _damaged_copy(_save_good_adapter(tmp_path / "good"), project / "adapters" / "broken")
    step = next(s for s in _steps() if s.get("run", "").startswith("loraguard audit"))
    done = _bash(step["run"], project, _env(project), 120)
    assert done.returncode == 1
    results = json.loads((project / "loraguard.sarif").read_text())["runs"][0]["results"]
    assert results and all(r["locations"] for r in results)


def _hook_files(project: Path, pattern: str) -> list[str]:
    """The files pre-commit would pass to a hook: tracked paths matching its `files` regex (re.search)."""
    return sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file() and re.search(pattern, str(p)))


@pytest.mark.spawns
def test_the_pre_commit_hook_passes_a_good_adapter_and_stops_a_damaged_one(tmp_path: Path) -> None:
    from loraguard.frontends.demo import _damaged_copy, _save_good_adapter

    [hook] = yaml.safe_load(HOOKS.read_text())
    assert hook["language"] == "system" and hook["id"] == "loraguard-audit"
    good = _save_good_adapter(tmp_path / "good" / "adapter")
    files = _hook_files(tmp_path / "good", hook["files"])
    assert files == ["adapter/adapter_model.safetensors"]
    env = _env(tmp_path)
    command = shlex.split(hook["entry"]) + hook.get("args", [])
    done = subprocess.run(command + files, cwd=tmp_path / "good", env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    _damaged_copy(good, tmp_path / "bad" / "adapter")
    files = _hook_files(tmp_path / "bad", hook["files"])
    done = subprocess.run(command + files, cwd=tmp_path / "bad", env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "lora_B" in done.stdout, done.stdout + done.stderr
