"""The reference LoRA layer: a base layer plus named adapters, with DoRA; its kinds are in `reference.kinds`.

Module and parameter names mirror peft's (`base_layer`, `lora_A.<adapter>`, `lora_embedding_A.<adapter>`,
`modules_to_save.<adapter>`, `original_module`) so state dicts line up key for key. State changes (merge,
unmerge, adapter switches) happen only through explicit calls, never as a side effect of `train()`/`eval()`.
"""

from __future__ import annotations

import math
from typing import cast

import torch
from torch import nn

from loraguard.core.merge_math import LayerKind, delta_weight, dora_merged_weight
from loraguard.reference.dora import Magnitude, dora_forward, initial_magnitude


def _wide(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 or wider, so merge arithmetic never happens in half precision."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def adapter_dtype(model_dtype: torch.dtype, autocast: bool) -> torch.dtype:
    """The dtype adapter weights are held in: float32 for a bf16/fp16 model with `autocast`, else the model's."""
    return torch.float32 if autocast and model_dtype in (torch.bfloat16, torch.float16) else model_dtype


def is_conv1d_transposed(layer: nn.Module) -> bool:
    """transformers' GPT-2 `Conv1D`: a linear layer whose weight is stored (in, out)."""
    return type(layer).__name__ == "Conv1D" and hasattr(layer, "nf")


class LoraLayer(nn.Module):
    """A base layer plus any number of named adapters, held here once for every layer kind.

    The base holds the factor containers (`lora_A`/`lora_B` of modules, named as peft names them), the LoRA
    forward ``B(A(dropout(x))) * s``, lora_B's bias and its merge into the base bias. A subclass says which
    modules the factors are (`_create`); the embedding layer also swaps the containers for peft's ParameterDicts.
    """

    kind: LayerKind
    #: Attribute names of the A and B containers; they are part of every state-dict key, as in peft.
    factor_stores: tuple[str, str] = ("lora_A", "lora_B")
    # Submodules, declared for type checkers (nn.Module's __getattr__ types them all as Tensor | Module).
    base_layer: nn.Module
    lora_dropout: nn.ModuleDict
    lora_magnitude_vector: nn.ModuleDict

    def __init__(self, base_layer: nn.Module):
        super().__init__()
        self.base_layer = base_layer
        for store in self.factor_stores:
            self.add_module(store, self._new_store())
        self.lora_magnitude_vector = nn.ModuleDict()  # DoRA adapters only
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.rank: dict[str, int] = {}
        self.lora_bias: dict[str, bool] = {}
        self.use_dora: dict[str, bool] = {}
        self.merged_adapters: list[str] = []
        self._unmerged: torch.Tensor | None = None  # the weight before the first merge (DoRA's norm is of it)
        self._before_merge: dict[str, torch.Tensor] = {}  # the weight before each DoRA merge: unmerge restores it
        self._tied: torch.Tensor | None = None  # a shared weight the merge went around (see merge's `untie`)
        self.active_adapters: list[str] = []
        self.disabled = False
        self.fan_in_fan_out = False

    # -- adapters ------------------------------------------------------------------------------------------
    def add(
        self,
        name: str,
        rank: int,
        scale: float,
        dropout: float,
        lora_bias: bool,
        init: bool | str,
        use_dora: bool = False,
        autocast: bool = False,
    ) -> None:
        """Create adapter `name`'s factors: B zero by default (`init=True`), both random with `init=False`.

        With `use_dora` it also gets a magnitude vector, ``||W + s*B@A||`` per output channel, as in peft. The
        factors take the base weight's dtype, or float32 on a bf16/fp16 base with `autocast` (peft's
        autocast_adapter_dtype).
        """
        if self.merged_adapters:
            raise RuntimeError(f"cannot add adapter {name!r} while {self.merged_adapters} are merged; unmerge first")
        if use_dora and lora_bias:
            raise ValueError("lora_bias=True is not supported with use_dora=True (peft refuses it too)")
        self.rank[name], self.scaling[name], self.lora_bias[name] = rank, scale, lora_bias
        self.use_dora[name] = use_dora
        self.lora_dropout[name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self._create(name, rank, lora_bias)
        self._init(name, init)
        if use_dora:
            self.lora_magnitude_vector[name] = Magnitude(initial_magnitude(self, name))
        weight = self.base_weight()
        self._factor_modules_to(name, weight.device, adapter_dtype(weight.dtype, autocast))

    def delete(self, name: str) -> None:
        """Remove adapter `name` from this layer (it must not be merged)."""
        if name in self.merged_adapters:
            raise RuntimeError(f"adapter {name!r} is merged; unmerge before deleting it")
        for store in self.adapter_stores():
            if name in store:
                del store[name]
        for d in (self.scaling, self.rank, self.lora_bias, self.use_dora):
            d.pop(name, None)
        if name in self.lora_dropout:
            del self.lora_dropout[name]
        self.active_adapters = [a for a in self.active_adapters if a != name]

    def adapters(self) -> list[str]:
        """Adapters present on this layer, in insertion order."""
        return list(self.scaling)

    def unwrapped(self) -> nn.Module:
        """The module this layer replaced (what unloading puts back)."""
        return self.base_layer

    def base_weight(self) -> torch.Tensor:
        """The base layer's weight (a Parameter of every kind the reference wraps)."""
        return cast(torch.Tensor, self.base_layer.weight)

    def unmerged_weight(self) -> torch.Tensor:
        """The base weight without any merged adapter in it (DoRA's norm is taken over this one, as in peft)."""
        return self._unmerged if self.merged_adapters and self._unmerged is not None else self.base_weight()

    def magnitude(self, name: str) -> torch.Tensor:
        """DoRA adapter `name`'s magnitude vector, shaped as peft saves it."""
        return cast(Magnitude, self.lora_magnitude_vector[name]).weight

    # -- merging -------------------------------------------------------------------------------------------
    def delta(self, name: str) -> torch.Tensor:
        """``s * B @ A`` in the base weight's layout (float32 or wider)."""
        a, b = self.factors(name)
        return delta_weight(a, b, self.scaling[name], self.kind, self.fan_in_fan_out)

    def merged_value(self, name: str, current: torch.Tensor) -> torch.Tensor:
        """`current` (float32 or wider) with adapter `name` merged in: ``+ s*B@A``, or DoRA's rescaled sum."""
        if not self.use_dora.get(name):
            return current + self.delta(name)
        unmerged = _wide(self.unmerged_weight()).to(current.dtype)
        return dora_merged_weight(
            current, unmerged, self.delta(name), self.magnitude(name), self.kind, self.fan_in_fan_out
        )

    @torch.no_grad()
    def merge(self, names: list[str], safe: bool = False, untie: bool = False) -> None:
        """Fold `names` into the base weight; already merged adapters are skipped, never re-applied.

        `untie`: the weight is shared with another module (tied input and output embeddings). The merge then goes
        into a copy, so the other module keeps computing what it did; unmerge puts the shared weight back.
        """
        weight = self.base_weight()
        if untie and not self.merged_adapters and any(n in self.scaling for n in names):
            self._tied = weight
            copy = nn.Parameter(weight.detach().clone(), requires_grad=weight.requires_grad)
            self.base_layer.weight = weight = copy
        for name in names:
            if name not in self.scaling or name in self.merged_adapters:
                continue
            new = self.merged_value(name, _wide(weight)).to(weight.dtype)
            if safe and not torch.isfinite(new).all():
                raise ValueError(f"merging adapter {name!r} gives non-finite weights; the adapter is broken")
            if not self.merged_adapters:
                self._unmerged = weight.detach().clone()
            if self.use_dora[name]:
                self._before_merge[name] = weight.detach().clone()
            weight.copy_(new)
            if self.lora_bias[name]:
                self._base_bias_for(name).add_(self.lora_b_bias(name) * self.scaling[name])
            self.merged_adapters.append(name)

    @torch.no_grad()
    def merge_is_finite(self, names: list[str]) -> bool:
        """Would merging `names` leave the base weight finite? (checked before any layer changes, for safe merge)"""
        weight = self.base_weight()
        new = _wide(weight)
        for name in names:
            if name in self.scaling and name not in self.merged_adapters:
                new = self.merged_value(name, new)
        return bool(torch.isfinite(new.to(weight.dtype)).all())

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take every merged adapter out, last merged first: subtract a LoRA delta, restore the weight a DoRA
        merge rescaled exactly as it was before that merge."""
        weight = self.base_weight()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight.copy_(self.unmerged_value(name, weight))
            if self.lora_bias[name]:
                self._base_bias_for(name).sub_(self.lora_b_bias(name) * self.scaling[name])
        self._unmerged = None
        if self._tied is not None:
            self.base_layer.weight, self._tied = self._tied, None

    def unmerged_value(self, name: str, weight: torch.Tensor) -> torch.Tensor:
        """The base weight with merged adapter `name` (the last merged) taken out, in the weight's dtype."""
        if name in self._before_merge:
            return self._before_merge.pop(name)
        return (_wide(weight) - self.delta(name)).to(weight.dtype)

    def _base_bias_for(self, name: str) -> torch.Tensor:
        bias = getattr(self.base_layer, "bias", None)
        if bias is None:
            raise RuntimeError(f"adapter {name!r} has lora_bias but the base layer has no bias to merge it into")
        return bias.data

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        if self.disabled and self.merged_adapters:
            raise RuntimeError("adapters are merged into this layer; unmerge() before disabling them")
        result = self.base_layer(x, *args, **kwargs)
        if self.disabled:
            return result
        for name in self.active_adapters:
            if name in self.scaling and name not in self.merged_adapters:
                result = self._adapted(name, x, result)
        return result

    def _adapted(self, name: str, x: torch.Tensor, result: torch.Tensor) -> torch.Tensor:
        """The running output with adapter `name` applied: ``+ B(A(x)) * s``, or DoRA's rescaling of it."""
        if self.use_dora[name]:
            return dora_forward(self, name, x, result)
        return result + self._lora_forward(name, x).to(result.dtype)

    # -- factors (shared by every kind; the embedding layer overrides what differs) ----------------------------
    @staticmethod
    def _new_store() -> nn.ModuleDict | nn.ParameterDict:
        """An empty container for one factor of every adapter."""
        return nn.ModuleDict()

    def adapter_stores(self) -> tuple[nn.ModuleDict | nn.ParameterDict, ...]:
        """Every container holding per-adapter tensors (deleted and moved together): A, B, then magnitudes."""
        stores = (cast(nn.ModuleDict | nn.ParameterDict, getattr(self, store)) for store in self.factor_stores)
        return (*stores, self.lora_magnitude_vector)

    def factor_modules(self, name: str) -> tuple[nn.Module, nn.Module]:
        """Adapter `name`'s A and B modules (Linear and Conv; the embedding holds bare tensors instead)."""
        a, b = (cast(nn.ModuleDict, getattr(self, store)) for store in self.factor_stores)
        return a[name], b[name]

    def factors(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) as raw tensors in peft's saved layout."""
        a, b = self.factor_modules(name)
        return cast(torch.Tensor, a.weight), cast(torch.Tensor, b.weight)

    def _create(self, name: str, rank: int, lora_bias: bool) -> None:
        """Create adapter `name`'s A and B (shapes depend on the layer kind)."""
        raise NotImplementedError

    def _lora_forward(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """``B(A(dropout(x))) * s``, computed in the factors' dtype."""
        a, b = self.factor_modules(name)
        x = x.to(self.factors(name)[0].dtype)
        return b(a(self.lora_dropout[name](x))) * self.scaling[name]

    def _init(self, name: str, init: bool | str) -> None:
        a, b = self.factors(name)
        with torch.no_grad():
            if init is False:
                nn.init.normal_(a, std=1.0 / math.sqrt(a[0].numel()))
                nn.init.normal_(b, std=0.1)
            elif init == "gaussian":
                nn.init.normal_(a, std=1.0 / self.rank[name])
                nn.init.zeros_(b)
            elif init is True:
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))
                nn.init.zeros_(b)
            else:
                raise ValueError(
                    f"init_lora_weights={init!r} is not implemented by the reference; use true, false or 'gaussian'"
                )
            if init is not False and self.lora_bias.get(name):  # B starts at zero, and so does its bias (peft)
                nn.init.zeros_(self.lora_b_bias(name))

    def _factor_modules_to(self, name: str, device: torch.device, dtype: torch.dtype) -> None:
        for store in self.adapter_stores():
            if name not in store:
                continue
            if isinstance(store, nn.ParameterDict):  # a bare factor (the embedding's): `.to` copies, so replace it
                held: torch.Tensor = store[name]
                store[name] = nn.Parameter(held.detach().to(device=device, dtype=dtype), held.requires_grad)
            else:
                store[name].to(device=device, dtype=dtype)

    def lora_b_bias(self, name: str) -> torch.Tensor:
        """lora_B's bias for an adapter created with lora_bias."""
        return cast(torch.Tensor, self.factor_modules(name)[1].bias)
