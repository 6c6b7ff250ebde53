"""Dtypes: float32, bfloat16 and float16 models keep their dtype and device through wrap, merge and unload."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

from loraguard.backends.base import Backend
from loraguard.harness.scenarios import Scenario
from loraguard.invariants.checks import expect
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import Wrapped, magnitudes, token_rows, wrap

if TYPE_CHECKING:
    from loraguard.invariants.tuners import TunerWrapped


@invariant(
    "dtype",
    "Outputs are finite and in the model's dtype; merge, unmerge and merge_and_unload keep every base "
    "weight's dtype and device; on bf16/fp16 models adapter weights are float32 with autocast_adapter_dtype=True "
    "and in the model's dtype with False.",
)
def dtype_preserved(backend: Backend, scenario: Scenario) -> None:
    check_dtypes_kept(backend, scenario, wrap(backend, scenario))
    if scenario.dtype in HALF and "autocast_adapter_dtype" in backend.capabilities:
        for autocast in (True, False):  # peft's get_peft_model option, each way
            config = dataclasses.replace(scenario.config, autocast_adapter_dtype=autocast)
            wrapped = wrap(backend, scenario, config)
            check_adapter_dtypes(backend, wrapped.model, torch.float32 if autocast else scenario.dtype, autocast)
            check_dtypes_kept(backend, scenario, wrapped)


#: Dtypes whose adapter weights autocast_adapter_dtype=True keeps in float32.
HALF = (torch.bfloat16, torch.float16)


def check_adapter_dtypes(backend: Backend, model: nn.Module, want: torch.dtype, autocast: bool) -> None:
    """Every LoRA factor, lora_B bias, DoRA magnitude and trainable-token row of adapter 'default' is held in
    `want`."""
    tensors = {f"{p} lora_A": a for p, (a, _) in backend.lora_factors(model, "default").items()}
    tensors |= {f"{p} lora_B": b for p, (_, b) in backend.lora_factors(model, "default").items()}
    tensors |= {f"{p} lora_B bias": t for p, t in backend.lora_biases(model, "default").items()}
    tensors |= {f"{p} magnitude": t for p, t in magnitudes(backend, model, "default").items()}
    tensors |= {f"{p} trainable tokens": t for p, t in token_rows(backend, model, "default").items()}
    odd = sorted(f"{name}: {t.dtype}" for name, t in tensors.items() if t.dtype != want)
    expect(not odd, f"autocast_adapter_dtype={autocast}: adapter weights not in {want}: {odd[:5]}")


def check_dtypes_kept(backend: Backend, scenario: Scenario, wrapped: Wrapped | TunerWrapped) -> None:
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
