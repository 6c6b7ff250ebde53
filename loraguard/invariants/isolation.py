"""Adapter isolation: what happens to one adapter never touches another (the modules_to_save leak of peft 0.14)."""

from __future__ import annotations

from loraguard.backends.base import Backend, optional_methods
from loraguard.harness.scenarios import OTHER, Scenario, expected_saved_keys
from loraguard.invariants.checks import assert_equal, assert_same_keys, assert_state_equal
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import adapter_snapshot, perturb, read_saved, scratch_dir, wrap


@invariant(
    "isolation",
    "Adding, training, switching or deleting one adapter leaves every other adapter bit-identical, "
    "and each adapter saves exactly its own modules_to_save (in peft's format, where the library writes it).",
    needs=("multi_adapter",),
    needs_second=True,
)
def adapters_isolated(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    first = adapter_snapshot(backend, wrapped.model, "default", scenario)
    out = wrapped.out()

    def unchanged(after: str) -> None:
        assert_state_equal(
            adapter_snapshot(backend, wrapped.model, "default", scenario), first, f"adapter 'default' after {after}"
        )
        assert_equal(wrapped.out(), out, f"output of adapter 'default' after {after}")

    backend.add_adapter(wrapped.model, OTHER, scenario.second_config)
    unchanged(f"adding adapter '{OTHER}'")
    backend.set_adapter(wrapped.model, [OTHER])
    perturb(backend, wrapped.model, OTHER)
    backend.set_adapter(wrapped.model, ["default"])
    unchanged(f"training adapter '{OTHER}' and switching back")

    adapters = [("default", scenario.config), (OTHER, scenario.second_config)]
    if {"save_load", "peft_format"} <= backend.capabilities:  # saved keys are known in peft's format only
        with scratch_dir() as d:
            backend.save(wrapped.model, d)
            for name, where in (("default", d), (OTHER, d / OTHER)):
                assert_same_keys(
                    read_saved(where), expected_saved_keys(scenario, adapters, name), f"keys saved for adapter '{name}'"
                )

    if "delete_adapter" in backend.capabilities:
        optional_methods(backend).delete_adapter(wrapped.model, OTHER)
        unchanged(f"deleting adapter '{OTHER}'")
