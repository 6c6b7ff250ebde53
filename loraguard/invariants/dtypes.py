"""Dtypes: float32, bfloat16 and float16 models keep their dtype and device through wrap, merge and unload."""

from __future__ import annotations

import torch

from loraguard.backends.base import Backend
from loraguard.harness.scenarios import Scenario
from loraguard.invariants.checks import expect
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import wrap


@invariant(
    "dtype",
    "Outputs are finite and in the model's dtype; merge, unmerge and merge_and_unload keep every base "
    "weight's dtype and device.",
)
def dtype_preserved(backend: Backend, scenario: Scenario) -> None:
    check_dtypes_kept(backend, scenario, wrap(backend, scenario))


def check_dtypes_kept(backend: Backend, scenario: Scenario, wrapped) -> None:
    """The dtype promise on an already wrapped model (LoRA here, peft's other tuners in invariants/tuners.py)."""
    out = wrapped.out()
    expect(out.dtype == wrapped.base_out.dtype, f"output dtype {out.dtype}, base model gives {wrapped.base_out.dtype}")
    expect(bool(torch.isfinite(out).all()), f"output has NaN or Inf in {scenario.dtype}")

    def same_as_base(when: str) -> None:
        for path, w0 in wrapped.base_weights.items():
            got = backend.base_weight(wrapped.model, path)
            expect(
                got.dtype == w0.dtype and got.device == w0.device,
                f"{when}: weight of '{path}' is {got.dtype} on {got.device}, was {w0.dtype} on {w0.device}",
            )

    backend.merge(wrapped.model)
    same_as_base("after merge")
    if "unmerge" in backend.capabilities:
        backend.unmerge(wrapped.model)
        same_as_base("after unmerge")
    plain = backend.merge_and_unload(wrapped.model)
    odd = sorted(f"{n}: {p.dtype}" for n, p in plain.named_parameters() if p.dtype != scenario.dtype)
    expect(not odd, f"merge_and_unload left parameters not in {scenario.dtype}: {odd[:5]}")
