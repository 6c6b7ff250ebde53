"""Wrapping and loading: re-wrapping an adapted model never targets LoRA internals, and loading for continued
training makes exactly the adapter trainable (peft's "Target module Dropout is not supported")."""

from __future__ import annotations

import dataclasses
import re

from loraguard.backends.base import Backend, Unsupported
from loraguard.core.matching import is_lora_internal
from loraguard.harness.scenarios import Scenario, expected_trainable
from loraguard.invariants.checks import assert_state_equal, expect
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import adapter_snapshot, scratch_dir, wrap

#: An error that names a LoRA internal as an unsupported target means the search walked into the wrapper.
_INTERNAL_ERROR = re.compile(r"(?i)target module.*\b(Dropout|Identity|ModuleDict|ParameterDict)\b.*not supported")


@invariant(
    "rewrap",
    "Wrapping an already adapted model is refused with a clear message or handled, and never "
    "selects LoRA internals (lora_dropout, base_layer, lora_A...).",
)
def rewrap_never_targets_internals(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    names = "|".join(re.escape(p.split(".")[-1]) for p in wrapped.targets)
    again = dataclasses.replace(
        scenario.config,
        target_modules=f".*(?:{names}).*",
        layers_to_transform=None,  # a regex names its layers itself (peft refuses both)
        layers_pattern=None,
        lora_dropout=0.1,
        modules_to_save=None,
        rank_pattern={},
        alpha_pattern={},
    )
    try:  # wrapped.base is the module the backend injected LoRA into: what a user passes to a second get_peft_model
        rewrapped = backend.wrap(wrapped.base, again)
    except Unsupported:  # the backend cannot ask: that is no refusal by the library, so the check did not run
        raise
    except Exception as err:  # a refusal is fine if it says what is wrong, not which internal it tripped on
        expect(
            not _INTERNAL_ERROR.search(str(err)),
            f"re-wrapping an adapted model failed on a LoRA internal instead of refusing clearly: "
            f"{type(err).__name__}: {str(err)[:200]}",
        )
        return
    plain = {n for n, _ in scenario.base().named_modules()}  # a user's module named like an internal is no internal
    inside = sorted(p for p in backend.lora_factors(rewrapped, "default") if is_lora_internal(p) and p not in plain)
    expect(not inside, f"re-wrapping an adapted model put LoRA on LoRA internals: {inside}")


@invariant(
    "continue-training",
    "Loading for continued training restores exact weights with exactly the adapter's "
    "parameters trainable; loading for inference leaves nothing trainable.",
    needs=("save_load",),
)
def load_trainability(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    snapshot = adapter_snapshot(backend, wrapped.model, "default", scenario)
    want = expected_trainable(scenario, [("default", scenario.config)], "default")
    with scratch_dir() as d:
        backend.save(wrapped.model, d)
        trainable = backend.load(scenario.base(), d, trainable=True)
        frozen = backend.load(scenario.base(), d, trainable=False)
    assert_state_equal(
        adapter_snapshot(backend, trainable, "default", scenario), snapshot, "weights loaded for training"
    )
    got = backend.trainable(trainable)
    expect(
        got == want,
        f"trainable after loading for continued training: unexpected {sorted(got - want)[:5]}, "
        f"missing {sorted(want - got)[:5]}",
    )
    still = sorted(backend.trainable(frozen))
    expect(not still, f"parameters trainable after loading for inference: {still[:5]}")
