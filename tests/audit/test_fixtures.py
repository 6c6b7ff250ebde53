"""The committed fixtures are exactly what fixtures/make_checkpoints.py writes, on any CPU code path, and each one
shows exactly its rule."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from loraguard.audit.merge import audit_merge
from tests.audit.helpers import audit, rules

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("make_checkpoints", ROOT / "fixtures" / "make_checkpoints.py")
make_checkpoints = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_checkpoints)
COMMITTED = make_checkpoints.OUT


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_committed_fixtures_are_what_the_generator_writes(tmp_path):
    make_checkpoints.build(tmp_path / "fresh")
    fresh, committed = _tree(tmp_path / "fresh"), _tree(COMMITTED)
    assert sorted(fresh) == sorted(committed), "run `python fixtures/make_checkpoints.py` and commit the result"
    changed = [name for name in fresh if fresh[name] != committed[name]]
    assert not changed, f"stale fixtures {changed}: run `python fixtures/make_checkpoints.py` and commit the result"


#: Run the generator as a script (argv: script, output folder), then say which kernels torch dispatched to.
_REGENERATE = """
import runpy, sys, torch
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
print("capability", torch.backends.cpu.get_cpu_capability())
"""


@pytest.mark.spawns
@pytest.mark.parametrize(
    ("env", "capability"),
    [
        ({"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}, "DEFAULT"),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, "AVX2"),
    ],
    ids=["scalar-kernels-sse-blas", "avx2"],
)
def test_other_cpu_code_paths_write_the_same_bytes(tmp_path, env, capability):
    # A machine with other vector units or another BLAS path must regenerate the committed bytes exactly.
    script = str(ROOT / "fixtures" / "make_checkpoints.py")
    run = subprocess.run(
        [sys.executable, "-c", _REGENERATE, script, str(tmp_path / "fresh")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    used = run.stdout.split()[-1]
    if used != capability:
        pytest.skip(f"this CPU cannot run the {capability} kernels (torch used {used})")
    fresh, committed = _tree(tmp_path / "fresh"), _tree(COMMITTED)
    assert sorted(fresh) == sorted(committed)
    assert [name for name in fresh if fresh[name] != committed[name]] == []


@pytest.mark.parametrize(("name", "scale"), [("merged_ok.safetensors", 1), ("merged_wrong_scale.safetensors", 2)])
def test_merged_fixtures_are_exact(name, scale):
    # Why the bytes are portable: float32 holds W + s * B @ A exactly (it equals the float64 result), so no
    # summation order or fused multiply-add can change a bit.
    merge = COMMITTED / "merge"
    base, merged = load_file(str(merge / "base.safetensors")), load_file(str(merge / name))
    factors = load_file(str(merge / "adapter" / "adapter_model.safetensors"))
    s = scale * make_checkpoints.CONFIG["lora_alpha"] / make_checkpoints.CONFIG["r"]
    for module in make_checkpoints.LAYERS:
        a, b = (factors[f"{make_checkpoints.P}{module}.lora_{x}.weight"].double() for x in "AB")
        exact = base[f"{module}.weight"].double() + s * (b @ a)
        assert torch.equal(merged[f"{module}.weight"].double(), exact), module


def test_every_rule_with_a_file_form_has_a_fixture():
    shown = set().union(*make_checkpoints.EXPECTED.values(), *make_checkpoints.MERGE_EXPECTED.values())
    assert {
        "LG101",
        "LG102",
        "LG103",
        "LG104",
        "LG105",
        "LG106",
        "LG107",
        "LG201",
        "LG202",
        "LG203",
        "LG205",
        "LG301",
        "LG302",
        "LG303",
        "LG304",
        "LG305",
        "LG306",
        "LG307",
        "LG401",
        "LG501",
        "LG502",
    } <= shown


@pytest.mark.parametrize("name", sorted(make_checkpoints.EXPECTED))
def test_fixture_shows_exactly_its_rule(name):
    assert rules(audit(COMMITTED / name)) == make_checkpoints.EXPECTED[name]


@pytest.mark.parametrize("name", sorted(make_checkpoints.MERGE_EXPECTED))
def test_merge_fixture_shows_exactly_its_rule(name):
    merge = COMMITTED / "merge"
    result = audit_merge(str(merge / "base.safetensors"), str(merge / "adapter"), str(merge / name))
    assert rules(result) == make_checkpoints.MERGE_EXPECTED[name]
