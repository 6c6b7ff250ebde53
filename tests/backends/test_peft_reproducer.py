"""Standalone peft reproducers: scripts that import only torch and peft, run where loraguard cannot be imported,
fail with a readable assertion on a real peft bug and pass where peft keeps the promise."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from loraguard.backends.peft import PeftBackend  # noqa: E402
from loraguard.core.config import LoraConfig  # noqa: E402
from loraguard.harness.scenarios import Scenario  # noqa: E402
from loraguard.harness.settings import RunOptions, resolve  # noqa: E402
from loraguard.harness.strategies import TreeSpec, tree_zoo_model  # noqa: E402
from loraguard.invariants.registry import all_invariants  # noqa: E402
from loraguard.run.reproducer import write_reproducer  # noqa: E402

ALLOWED_IMPORTS = {"tempfile", "peft", "torch", "safetensors"}


def scenario(leaves, dtype=torch.float32, **config) -> Scenario:
    cfg = LoraConfig(r=2, lora_alpha=8, init_lora_weights=False, **config)
    return Scenario(tree_zoo_model(TreeSpec(tuple(leaves))), cfg, None, dtype, "cpu", seed=3, label="drawn")


#: huggingface/peft#1917: modules_to_save=['fc'] is matched with a bare str.endswith, so 'xfc' is copied too.
SUFFIX_BUG = scenario([("fc", "linear"), ("xfc", "linear"), ("proj", "linear")], target_modules=["proj"],
                      modules_to_save=["fc"])  # fmt: skip


BLOCKER = """import runpy, sys

class NoLoraguard:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] == "loraguard":
            raise ImportError("a standalone reproducer must not import loraguard")

sys.meta_path.insert(0, NoLoraguard)
for script in sys.argv[1:]:  # one after the other, each as __main__ with its own globals
    sys.argv = [script]
    runpy.run_path(script, run_name="__main__")
"""


def run_without_loraguard(scripts: list[Path], tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `scripts` in turn in a fresh interpreter in which `import loraguard` fails (an import blocker goes first);
    the first that raises ends the run."""
    blocker = tmp_path / "no_loraguard.py"
    blocker.write_text(BLOCKER)
    probe = tmp_path / "probe.py"
    probe.write_text("import loraguard\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    tried = subprocess.run([sys.executable, str(blocker), str(probe)], env=env, capture_output=True, text=True)
    assert tried.returncode != 0 and "must not import loraguard" in tried.stderr, tried.stderr
    return subprocess.run(
        [sys.executable, str(blocker), *map(str, scripts)], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def emitted(invariant: str, case: Scenario, tmp_path: Path) -> Path:
    source = PeftBackend().standalone_reproducer(invariant, all_invariants()[invariant].promise, case)
    assert source is not None
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert imported <= ALLOWED_IMPORTS, imported
    path = tmp_path / f"{invariant}.py"
    path.write_text(source)
    return path


@pytest.mark.spawns
def test_scripts_fail_standalone_on_the_bug_and_say_so_where_peft_keeps_the_promise(tmp_path: Path) -> None:
    """merge-forward, roundtrip and continue-training where peft keeps the promise, then naming on the suffix bug:
    four scripts, one interpreter (importing peft is most of each run); the failing one goes last, as it ends it."""
    case = scenario([("fc", "linear"), ("blocks.0.proj", "conv1d")], target_modules=["fc", "proj"])
    passing = [emitted(invariant, case, tmp_path) for invariant in ("merge-forward", "roundtrip", "continue-training")]
    done = run_without_loraguard([*passing, emitted("naming", SUFFIX_BUG, tmp_path)], tmp_path)
    assert done.stdout.count("no failure") == len(passing), done.stdout + done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert "AssertionError: modules_to_save=['fc'] should copy exactly ['fc']; peft copied ['fc', 'xfc']" in done.stderr


@pytest.mark.spawns  # write_reproducer confirms the script fails in a fresh interpreter
def test_the_run_writes_the_standalone_form_named_after_the_test_id(tmp_path: Path) -> None:
    settings = resolve(RunOptions(backends=["peft"], reproducer_dir=tmp_path / "repro", builtin_known_failures=False))
    path = write_reproducer("naming", settings.backends[0], SUFFIX_BUG, settings, "test_drawn[naming-peft]")
    assert path.name == "test_drawn-naming-peft.py"
    assert path.read_text().startswith('"""Reproducer: peft ')
