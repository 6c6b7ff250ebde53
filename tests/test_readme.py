"""Every shell command in README.md runs as written, so the README cannot promise what the code does not do.

Commands come from the README's ```sh blocks, in order, and run with bash in one small user project (a package
`mypkg` with a model factory, a git repository, this environment's scripts first on PATH). Each command must
match exactly one rule in RULES: run here, run in the slow test (minutes), or not run, with the reason (the
network, a GPU, or this very suite). A command added to the README without a rule fails
`test_every_readme_command_has_a_rule`.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUN, SLOW = "run", "slow"

#: (command prefix, what the tests do with it); the first rule whose prefix starts the command wins
RULES: list[tuple[str, str]] = [
    ("make test", "not run: it is this suite"),
    ("make demo", SLOW),
    ("pip install torch --index-url", "not run: downloads torch from the PyTorch index; this environment has torch"),
    ("pip install -c torch-cpu.txt", "not run: installs loraguard from a URL, wheel or path (the network)"),
    ("pip install -c constraints.txt", "not run: changes the running environment's peft"),
    ("python -c", RUN),
    ("loraguard --version", RUN),
    ("python -m loraguard --version", RUN),
    ("pytest --loraguard", SLOW),
    ("loraguard snapshot --out gating/baseline --force", SLOW),
    ("loraguard snapshot", RUN),
    ("git add", RUN),
    ("loraguard compare", RUN),
    ("echo", RUN),
]

USER_MODELS = '''
from loraguard.harness.zoo import ZOO, ZooModel


def tiny():
    """The user's own model: the zoo mlp under another name, LoRA on fc2 only."""
    mlp = ZOO["mlp"]
    return ZooModel("tiny", mlp.build, mlp.inputs, ["fc2"], [])
'''


def readme_commands() -> list[str]:
    """The commands of the ```sh blocks, in order: continuation lines joined, comment-only lines dropped."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", README.read_text(), flags=re.S | re.M):
        pending = ""
        for line in block.splitlines():
            line = pending + line
            pending = ""
            if line.endswith("\\"):
                pending = line[:-1]
                continue
            if line.strip() and not line.lstrip().startswith("#"):
                commands.append(line.strip())
    return commands


def rule(command: str) -> str:
    """What the tests do with `command` (its words, comments and quoting aside, must start with a rule's prefix)."""
    words = " ".join(shlex.split(command, comments=True))
    return next((what for prefix, what in RULES if words.startswith(prefix)), "")


def test_every_readme_command_has_a_rule() -> None:
    commands = readme_commands()
    assert len(commands) > 10
    assert [c for c in commands if not rule(c)] == [], "add a rule to RULES for each new README command"
    used = {next(p for p, _ in RULES if " ".join(shlex.split(c, comments=True)).startswith(p)) for c in commands}
    assert [p for p, _ in RULES if p not in used] == [], "remove rules no README command uses"


def _project(root: Path) -> dict[str, str]:
    """The user project the commands run in; returns the environment they run with."""
    (root / "mypkg").mkdir(parents=True)
    (root / "mypkg" / "__init__.py").write_text("")
    (root / "mypkg" / "lora_models.py").write_text(USER_MODELS)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "GIT_DIR", "GIT_WORK_TREE")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["GITHUB_STEP_SUMMARY"] = str(root / "summary.md")
    env.update(GIT_AUTHOR_NAME="u", GIT_AUTHOR_EMAIL="u@example.invalid", GIT_COMMITTER_NAME="u")
    env["GIT_COMMITTER_EMAIL"] = "u@example.invalid"
    subprocess.run(["git", "init", "-q"], cwd=root, check=True, env=env)
    return env


def _run_all(tmp_path: Path, wanted: set[str], timeout: int) -> dict[str, subprocess.CompletedProcess[str]]:
    env = _project(tmp_path)
    done = {}
    for command in readme_commands():
        if rule(command) not in wanted:
            continue
        result = subprocess.run(
            ["bash", "-eo", "pipefail", "-c", command],
            cwd=ROOT if command.startswith("make ") else tmp_path,  # make targets are this repository's
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, (
            f"README command failed: {command}\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
        done[command] = result
    return done


@pytest.mark.spawns
def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    done = _run_all(tmp_path, {RUN}, timeout=300)
    assert any(
        "recorded" in r.stdout and "tiny-r4-f32" in (tmp_path / "gating/baseline/manifest.json").read_text()
        for r in done.values()
    )
    assert "| tiny-r4-f32 |" in (tmp_path / "summary.md").read_text()  # --model found from the project root
    assert (tmp_path / "torch-cpu.txt").read_text().startswith("torch==")


@pytest.mark.slow
def test_readme_commands_that_take_minutes(tmp_path: Path) -> None:
    """The README commands that run the whole default suite or the demo, in the same project, after the fast ones."""
    pytest.importorskip("peft")
    for command in readme_commands():  # the user's own known-failures files the commands name: none known yet
        words = shlex.split(command, comments=True)
        if "--loraguard-known-failures" in words:
            (tmp_path / words[words.index("--loraguard-known-failures") + 1]).write_text("# none yet\n")
    _run_all(tmp_path, {RUN, SLOW}, timeout=900)
