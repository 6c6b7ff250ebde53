"""Options users set that change what a fresh adapter is: init options other than random B start as a no-op."""

from __future__ import annotations

import dataclasses

import torch

from loraguard.backends.base import Backend
from loraguard.harness.scenarios import Scenario
from loraguard.invariants.checks import assert_close, expect
from loraguard.invariants.registry import Skipped, invariant
from loraguard.invariants.steps import wrap

#: peft's init options that the reference implements besides random B (False): B starts at zero.
ZERO_B_INITS: tuple[bool | str, ...] = (True, "gaussian")


@invariant(
    "init-noop",
    "With init_lora_weights=True or 'gaussian' one factor of every adapter layer starts at zero (B; A for "
    "embeddings in peft), the other does not, and the wrapped model computes the base model's output.",
    needs=("init_options",),
)
def zero_b_init_is_a_noop(backend: Backend, scenario: Scenario) -> None:
    if scenario.config.use_dora:
        raise Skipped("DoRA starts at the base output only through its magnitude's norm; the DoRA invariants check it")
    inits = ZERO_B_INITS if not scenario.config.lora_bias else (True,)  # peft refuses lora_bias with 'gaussian'
    for init in inits:
        config = dataclasses.replace(scenario.config, init_lora_weights=init, modules_to_save=None)
        wrapped = wrap(backend, scenario, config, train=False)  # fresh trainable tokens are the rows themselves
        for path, (a, b) in backend.lora_factors(wrapped.model, "default").items():
            zero = [not bool(t.detach().any()) for t in (a, b)]
            expect(zero.count(True) == 1, f"init_lora_weights={init!r}: '{path}' factors all-zero (A, B): {zero}")
        with torch.no_grad():
            assert_close(wrapped.out(), wrapped.base_out, scenario.dtype, f"init_lora_weights={init!r}: output")
