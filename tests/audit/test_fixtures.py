"""The committed fixtures are exactly what fixtures/make_checkpoints.py writes, and each one shows exactly its rule."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

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


def test_every_rule_with_a_file_form_has_a_fixture():
    shown = set().union(*make_checkpoints.EXPECTED.values(), *make_checkpoints.MERGE_EXPECTED.values())
    assert {"LG101", "LG102", "LG103", "LG104", "LG105", "LG106", "LG107", "LG201", "LG202", "LG203", "LG205",
            "LG301", "LG302", "LG303", "LG304", "LG305", "LG306", "LG307", "LG401", "LG501", "LG502"} <= shown


@pytest.mark.parametrize("name", sorted(make_checkpoints.EXPECTED))
def test_fixture_shows_exactly_its_rule(name):
    assert rules(audit(COMMITTED / name)) == make_checkpoints.EXPECTED[name]


@pytest.mark.parametrize("name", sorted(make_checkpoints.MERGE_EXPECTED))
def test_merge_fixture_shows_exactly_its_rule(name):
    merge = COMMITTED / "merge"
    result = audit_merge(str(merge / "base.safetensors"), str(merge / "adapter"), str(merge / name))
    assert rules(result) == make_checkpoints.MERGE_EXPECTED[name]
