"""Export a merged full model from a LoRA model trained together with its base weights, under ZeRO-3 or not.

The workaround users reach for (deepcopy, ``merge_and_unload()`` on the copy) breaks under ZeRO-3: the
parameters are shards. Here each LoRA layer is gathered in turn, ``W + s * B @ A`` is computed on a CPU copy,
the ranks check they agree, and rank 0 writes one safetensors file. The training model is only read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, TypeGuard, TypeVar

import torch
from torch import nn

from loraguard.core.merge_math import LayerKind, delta_weight
from loraguard.harness.zero3.gather import gathered

_Item = TypeVar("_Item", covariant=True)


class _ByAdapter(Protocol[_Item]):
    """A per-adapter container (an nn.ModuleDict or nn.ParameterDict keyed by adapter name)."""

    def __contains__(self, name: object) -> bool: ...

    def __getitem__(self, name: str) -> _Item: ...


class _Weighted(Protocol):
    """A factor layer (nn.Linear, nn.Conv*) of a LoRA layer."""

    weight: torch.Tensor


class _LoraLayer(Protocol):
    """What the export reads of a LoRA layer; peft's and the reference's use the same names."""

    base_layer: nn.Module
    scaling: dict[str, float]
    active_adapters: list[str]
    merged_adapters: list[str]

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


class _LayerFactors(Protocol):
    """A linear or conv LoRA layer's factor layers (peft's embedding layers hold these too, empty)."""

    lora_A: _ByAdapter[_Weighted]
    lora_B: _ByAdapter[_Weighted]


class _EmbeddingFactors(Protocol):
    """An embedding LoRA layer's factor tensors (the reference's embedding layers hold only these)."""

    lora_embedding_A: _ByAdapter[torch.Tensor]
    lora_embedding_B: _ByAdapter[torch.Tensor]


class _SavedCopies(Protocol):
    """What the export reads of a modules_to_save wrapper, peft's or the reference's."""

    original_module: nn.Module
    modules_to_save: _ByAdapter[nn.Module]
    active_adapters: list[str]


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The merged base model's state dict (as ``merge_and_unload().state_dict()`` would give), on the CPU.

    `model` is a peft `PeftModel`, a loraguard reference `LoraModel`, or a DeepSpeed engine around one.
    Collective when the model is ZeRO-3 partitioned: call it on every rank.
    """
    out: dict[str, torch.Tensor] = {}
    _collect(_base_of(model), "", out)
    return dict(sorted(out.items()))


def export_merged(model: nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """Write the merged model to `path` (safetensors) and return its state dict; the training model is untouched.

    Under ZeRO-3 (or any initialized process group) call it on every rank: the ranks must agree on every
    tensor, and only rank 0 writes. A model outside a process group is exported by the calling process.
    """
    from safetensors.torch import save_file

    state = merged_state_dict(model)
    rank = _agree(state)
    if rank == 0:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata={"format": "pt"})
    _barrier()
    return state


def _base_of(model: nn.Module) -> nn.Module:
    """The user's model inside a DeepSpeed engine and a peft or reference wrapper."""
    model = getattr(model, "module", model)
    get_base_model = getattr(model, "get_base_model", None)
    if get_base_model is not None:
        return get_base_model()
    from loraguard.reference import LoraModel

    return model.model if isinstance(model, LoraModel) else model


def _is_lora_layer(module: object) -> TypeGuard[_LoraLayer]:
    factors = hasattr(module, "lora_A") or hasattr(module, "lora_embedding_A")
    return hasattr(module, "base_layer") and factors and hasattr(module, "scaling")


def _has_layer_factors(layer: object, name: str) -> TypeGuard[_LayerFactors]:
    factors = getattr(layer, "lora_A", None)
    return factors is not None and name in factors


def _has_embedding_factors(layer: object, name: str) -> TypeGuard[_EmbeddingFactors]:
    factors = getattr(layer, "lora_embedding_A", None)
    return factors is not None and name in factors


def _is_saved_copy(module: object) -> TypeGuard[_SavedCopies]:
    return hasattr(module, "modules_to_save") and hasattr(module, "original_module")


def _disabled(module: object) -> bool:
    """peft calls the flag `disable_adapters`, the reference `disabled`."""
    return bool(getattr(module, "disable_adapters", False)) or bool(getattr(module, "disabled", False))


def _collect(module: nn.Module, prefix: str, out: dict[str, torch.Tensor], gather: bool = True) -> None:
    """Fill `out` with `module`'s merged state, gathering one module's own parameters at a time."""
    if _is_lora_layer(module):
        _collect_lora_layer(module, prefix, out)
        return
    if _is_saved_copy(module):
        _collect(_active_copy(module, prefix), prefix, out, gather)
        return
    with gathered(module.parameters(recurse=False) if gather else ()):
        for name, param in module.named_parameters(recurse=False):
            out[prefix + name] = param.detach().to("cpu", copy=True)
    for name, buf in module.named_buffers(recurse=False):
        if buf is not None and name not in module._non_persistent_buffers_set:
            out[prefix + name] = buf.detach().to("cpu", copy=True)
    for name, child in module.named_children():
        _collect(child, f"{prefix}{name}.", out, gather)


def _active_copy(wrapper: _SavedCopies, prefix: str) -> nn.Module:
    """The module a modules_to_save wrapper runs: the active adapter's copy, or the original."""
    if _disabled(wrapper):
        return wrapper.original_module
    active = [a for a in wrapper.active_adapters if a in wrapper.modules_to_save]
    if len(active) > 1:
        raise ValueError(
            f"{prefix.rstrip('.')}: adapters {active} each have a trained copy of this module; "
            "activate one of them (set_adapter) before exporting"
        )
    return wrapper.modules_to_save[active[0]] if active else wrapper.original_module


def _collect_lora_layer(layer: _LoraLayer, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """The base layer's state with the active, unmerged adapters' deltas added to its weight."""
    base_state: dict[str, torch.Tensor] = {}
    with gathered(layer.parameters()):
        _collect(layer.base_layer, prefix, base_state, gather=False)
        weight = base_state[prefix + "weight"]
        wide = weight.to(torch.promote_types(weight.dtype, torch.float32))
        pending = [] if _disabled(layer) else [a for a in layer.active_adapters if a not in layer.merged_adapters]
        for name in pending:
            _refuse_unsupported(layer, name, prefix)
            a, b = _factors(layer, name, prefix)
            wide = wide + delta_weight(
                a.detach().cpu(),
                b.detach().cpu(),
                layer.scaling[name],
                _kind(layer.base_layer),
                bool(getattr(layer, "fan_in_fan_out", False)),
            )
    base_state[prefix + "weight"] = wide.to(weight.dtype)
    out.update(base_state)


def _factors(layer: _LoraLayer, name: str, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapter `name`'s (A, B): the factor layers' weights, or an embedding's factor tensors."""
    if _has_layer_factors(layer, name):
        return layer.lora_A[name].weight, layer.lora_B[name].weight
    if _has_embedding_factors(layer, name):
        return layer.lora_embedding_A[name], layer.lora_embedding_B[name]
    raise ValueError(f"{prefix.rstrip('.')}: adapter {name!r} is active but this layer holds no factors for it")


def _kind(base: nn.Module) -> LayerKind:
    if isinstance(base, nn.Embedding):
        return "embedding"
    if isinstance(base, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv"
    return "linear"


def _refuse_unsupported(layer: _LoraLayer, name: str, prefix: str) -> None:
    """DoRA and lora_bias merge differently from W + s B A; refuse rather than export a wrong model."""
    for flag in ("use_dora", "lora_bias"):
        if getattr(layer, flag, {}).get(name, False):
            raise ValueError(
                f"{prefix.rstrip('.')}: adapter {name!r} uses {flag}, which this export does not "
                "merge; merge it with the library (merge_and_unload) on a gathered copy instead"
            )


def _digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key, tensor in state.items():
        h.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _agree(state: dict[str, torch.Tensor]) -> int:
    """This process's rank after checking every rank computed the same export (0 outside a process group)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return 0
    digests: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(digests, _digest(state))
    if len(set(digests)) > 1:
        by_rank = ", ".join(f"rank {r}: {str(d)[:12]}" for r, d in enumerate(digests))
        raise RuntimeError(
            f"ranks computed different merged models ({by_rank}); their parameters diverged: check "
            "that every rank trains the same model with the same DeepSpeed config"
        )
    return dist.get_rank()


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
