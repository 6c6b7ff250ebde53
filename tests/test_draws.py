"""seed_only (loraguard.harness.draws): a derandomized draw is the same whatever local modules are imported.

Hypothesis mixes constants read from the source of local modules into its draws; without seed_only a module
imported between two runs of the same seeded test changes what they draw (the hazard), with it nothing does."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from hypothesis import given, seed, settings
from hypothesis import strategies as st

from loraguard.harness.draws import seed_only


def _draws() -> list[int]:
    seen: list[int] = []

    @seed(20261202)
    @settings(max_examples=200, database=None, derandomize=True, deadline=None)
    @given(st.integers(0, 10**9))
    def collect(value: int) -> None:
        seen.append(value)

    collect()
    return seen


def _import_constants(tmp_path: Path, name: str) -> None:
    """A new local module whose source holds integers in the drawn range, imported as a user's project would be."""
    values = ", ".join(str(123_456_789 + 7919 * i) for i in range(50))
    (tmp_path / f"{name}.py").write_text(f"SIZES = [{values}]\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


def test_a_newly_imported_local_module_changes_plain_draws_but_not_seed_only_ones(tmp_path: Path) -> None:
    with seed_only():
        guarded = _draws()
    plain = _draws()
    _import_constants(tmp_path, "lg_project_constants")
    after = _draws()  # also leaves Hypothesis's cache of allowed constants holding the new ones
    assert after != plain and any(123_456_789 <= v < 123_456_789 + 7919 * 50 for v in after), (
        "Hypothesis no longer draws local constants: seed_only may be dropped"
    )
    with seed_only():
        assert _draws() == guarded, "a local module's constants changed seed_only draws"
    assert _draws() == after, "seed_only left the draws after it changed"
