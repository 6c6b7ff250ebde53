"""DeepSpeed ZeRO-3 invariants across real ranks, with `--loraguard-zero3 N` (skipped otherwise)."""

import functools

import pytest

from loraguard.zero3 import invariant_ids, run_suite


@functools.cache
def _results(world_size: int, backend: str, device: str) -> dict:
    """One launch per backend runs every ZeRO-3 invariant; the tests below read its results."""
    return {r.id: r for r in run_suite(world_size, backend, device=device)}


@pytest.mark.loraguard()
@pytest.mark.parametrize("zero3_id", invariant_ids())
def test_zero3(lg_backend, lg_settings, zero3_id):
    if not lg_settings.zero3:
        pytest.skip("pass --loraguard-zero3 N to run the ZeRO-3 invariants on N ranks")
    spec = lg_settings.backend_specs.get(lg_backend.name, lg_backend.name)
    result = _results(lg_settings.zero3, spec, lg_settings.device)[zero3_id]
    if result.status == "skipped":
        pytest.skip(result.message)
    if result.status != "passed":
        pytest.fail(f"[{result.status}] {result.message}", pytrace=False)
