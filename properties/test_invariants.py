"""Every registered invariant, in one shape per kind: on the zoo's scenarios, on drawn scenarios, as a state
machine, and across the ranks of a distributed world. Test ids read ``test_zoo[<invariant>-<backend>-<scenario>]``."""

import functools

import pytest

from loraguard.invariants.registry import all_invariants
from loraguard.run.in_pytest import check, check_drawn, check_sequence


def _each(kind: str) -> list:
    """One parameter per invariant of `kind`, marked with its ID (the plugin's summary and known failures key)."""
    return [pytest.param(i, marks=pytest.mark.loraguard(i), id=i) for i in all_invariants(kind)]


@pytest.mark.parametrize("invariant_id", _each("scenario"))
def test_zoo(invariant_id, lg_backend, lg_scenario, lg_settings, request):
    check(invariant_id, lg_backend, lg_scenario, lg_settings, request.node)


@pytest.mark.parametrize("invariant_id", _each("scenario"))
def test_drawn(invariant_id, lg_backend, lg_settings, request):
    """A Hypothesis property per invariant, seeded by its ID (each invariant meets its own examples)."""
    check_drawn(invariant_id, lg_backend, lg_settings, request.node)


@pytest.mark.parametrize("invariant_id", _each("sequence"))
def test_sequence(invariant_id, lg_backend, lg_settings):
    check_sequence(invariant_id, lg_backend, lg_settings)


@functools.cache
def _zero3_results(world_size: int, backend: str, device: str) -> dict:
    """One launch per backend runs every ZeRO-3 invariant; the tests below read its results."""
    from loraguard.zero3 import run_suite

    return {r.invariant: r for r in run_suite(world_size, backend, device=device)}


@pytest.mark.parametrize("invariant_id", _each("zero3"))
def test_zero3(invariant_id, lg_backend, lg_settings):
    if not lg_settings.zero3:
        pytest.skip("pass --loraguard-zero3 N to run the ZeRO-3 invariants on N ranks")
    spec = lg_settings.backend_specs.get(lg_backend.name, lg_backend.name)
    result = _zero3_results(lg_settings.zero3, spec, lg_settings.device)[invariant_id]
    if result.status == "skipped":
        pytest.skip(result.message)
    if result.status != "passed":
        pytest.fail(f"[{result.status}] {result.message}", pytrace=False)


@functools.cache
def _fsdp_results(world_size: int, backend: str, device: str, api: str) -> dict:
    """One launch per backend runs every FSDP invariant; the tests below read its results."""
    from loraguard.fsdp import run_suite

    device = "cuda" if device.startswith("cuda") else device  # rank r takes cuda:r
    return {r.invariant: r for r in run_suite(world_size, backend, api=api, device=device)}


@pytest.mark.parametrize("invariant_id", _each("fsdp"))
def test_fsdp(invariant_id, lg_backend, lg_settings):
    if not lg_settings.fsdp:
        pytest.skip("pass --loraguard-fsdp N to run the FSDP invariants on N ranks")
    spec = lg_settings.backend_specs.get(lg_backend.name, lg_backend.name)
    result = _fsdp_results(lg_settings.fsdp, spec, lg_settings.device, lg_settings.fsdp_api)[invariant_id]
    if result.status == "skipped":
        pytest.skip(result.message)
    if result.status != "passed":
        pytest.fail(f"[{result.status}] {result.message}", pytrace=False)
