"""One adapter's tensors as a backend holds them, keyed alike for every backend and the reference."""

from __future__ import annotations

from typing import Protocol, TypeVar

import torch
from torch import nn

_Model = TypeVar("_Model", bound=nn.Module, contravariant=True)


class AdapterTensors(Protocol[_Model]):
    """The reads `raw_tensors` makes: a backend's, or the reference backend's over its own `LoraModel`."""

    def lora_factors(self, model: _Model, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]: ...

    def lora_biases(self, model: _Model, adapter: str) -> dict[str, torch.Tensor]: ...

    def saved_copies(self, model: _Model, adapter: str) -> dict[str, dict[str, torch.Tensor]]: ...


def raw_tensors(backend: AdapterTensors[_Model], model: _Model, adapter: str) -> dict[str, torch.Tensor]:
    """One adapter's tensors as the backend holds them, by module path and role (factors, lora_B bias, copies)."""
    out: dict[str, torch.Tensor] = {}
    for path, (a, b) in backend.lora_factors(model, adapter).items():
        out[f"{path}: lora_A"], out[f"{path}: lora_B"] = a, b
    for path, bias in backend.lora_biases(model, adapter).items():
        out[f"{path}: lora_B bias"] = bias
    for path, state in backend.saved_copies(model, adapter).items():
        out.update({f"{path}: modules_to_save {key}": value for key, value in state.items()})
    return out


def as_oracle_dtype(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """A backend may keep adapter tensors wider than the model (peft's autocast_adapter_dtype keeps float32 on a
    bfloat16 model); the oracle holds them rounded to the model's dtype, so compare at that precision."""
    wider = got.is_floating_point() and want.is_floating_point() and got.dtype.itemsize > want.dtype.itemsize
    return got.to(want.dtype) if wider else got
