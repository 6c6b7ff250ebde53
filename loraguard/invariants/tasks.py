"""Task models: every adapter of a model built for a task keeps its own head copy, through adds, saves and switches.

Users build a classifier with `task_type` and let peft add the head (``classifier``, ``score``) to modules_to_save;
they add a second and third adapter later, save, load and switch. Each adapter must get, train, save and load its
own copy of the head, and switching adapters must switch heads. Which heads each adapter gets is the reference's
answer (`core.tasks`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import torch

from loraguard.backends.base import Backend
from loraguard.core.config import LoraConfig
from loraguard.harness.scenarios import OTHER, Scenario, expected_saved_keys, expected_saved_modules
from loraguard.harness.zoo import run
from loraguard.invariants.checks import assert_equal, assert_same_keys, assert_state_equal, expect
from loraguard.invariants.registry import Skipped, invariant
from loraguard.invariants.steps import adapter_snapshot, perturb, read_saved, scratch_dir, wrap

#: The name of the third adapter, added after the second.
THIRD = "third"


def _adapters(scenario: Scenario) -> list[tuple[str, LoraConfig]]:
    """The first adapter, the scenario's second, and a third configured like the first (as users repeat a config)."""
    second = cast(LoraConfig, scenario.second)
    third = dataclasses.replace(scenario.config, r=3, lora_alpha=6, rank_pattern={}, alpha_pattern={})
    return [("default", scenario.config), (OTHER, second), (THIRD, third)]


def _heads(scenario: Scenario, adapters: list[tuple[str, LoraConfig]]) -> dict[str, set[str]]:
    """Per adapter, the modules it must keep a copy of (task heads and its own modules_to_save), per the reference."""
    saved = expected_saved_modules(scenario, adapters)
    return {name: {p for p, names in saved.items() if name in names} for name, _ in adapters}


@invariant(
    "task-heads",
    "With a task_type, every adapter (the first, a second and third added later, after save and load) gets its own "
    "copy of the task's head; training one leaves the others and the original untouched; switching switches heads.",
    needs=("multi_adapter", "save_load", "load_adapter", "modules_to_save", "task_type"),
    needs_second=True,
    needs_task_type=True,
)
def task_heads_per_adapter(backend: Backend, scenario: Scenario) -> None:
    adapters = _adapters(scenario)
    want = _heads(scenario, adapters)
    if not any(want.values()):
        raise Skipped(f"task {scenario.config.task_type} adds no head here and no modules_to_save is configured")
    extra = cast(Any, backend)  # load_adapter: declared by the capability checked above
    wrapped = wrap(backend, scenario)

    def heads_of(model: torch.nn.Module, name: str, when: str) -> None:
        got = set(backend.saved_copies(model, name))
        expect(
            got == want[name], f"{when}: adapter '{name}' keeps copies of {sorted(got)}, expected {sorted(want[name])}"
        )

    heads_of(wrapped.model, "default", "after wrapping")
    for name, config in adapters[1:]:
        backend.add_adapter(wrapped.model, name, config)
        heads_of(wrapped.model, name, f"after adding '{name}'")
    outs, snaps = {}, {}
    for seed, (name, _) in enumerate(adapters, start=11):
        backend.set_adapter(wrapped.model, [name])
        perturb(backend, wrapped.model, name, seed=seed)  # train this adapter: its factors and its head copy
        outs[name] = wrapped.out()
        snaps[name] = adapter_snapshot(backend, wrapped.model, name, scenario)
    for name, _ in reversed(adapters):
        backend.set_adapter(wrapped.model, [name])
        assert_state_equal(adapter_snapshot(backend, wrapped.model, name, scenario), snaps[name], f"adapter '{name}'")
        assert_equal(wrapped.out(), outs[name], f"output after switching back to '{name}'")
    if "disable" in backend.capabilities:
        with backend.disabled(wrapped.model):
            assert_equal(wrapped.out(), wrapped.base_out, "output with adapters disabled (original head) vs base")
    with scratch_dir() as d:
        backend.save(wrapped.model, d)
        for name, _ in adapters:
            where = d if name == "default" else d / name
            keys = dict.fromkeys(expected_saved_keys(scenario, adapters, name))
            assert_same_keys(read_saved(where), keys, f"keys saved for adapter '{name}'")
        loaded = backend.load(scenario.base(), d)
        for name, _ in adapters[1:]:
            extra.load_adapter(loaded, d / name, name)
    for name, _ in adapters:
        heads_of(loaded, name, "after load")
        backend.set_adapter(loaded, [name])
        assert_state_equal(adapter_snapshot(backend, loaded, name, scenario), snaps[name], f"'{name}' after load")
        with torch.no_grad():
            assert_equal(run(loaded, wrapped.inputs), outs[name], f"output of '{name}' after load vs before save")
