"""Trainable tokens in the reference (peft's `trainable_token_indices`): new values for some rows of an embedding.

Per adapter, a module holds the listed row indices and a trainable tensor of the rows' new values (initialised
to the rows as they are, so a fresh adapter changes nothing). The forward runs the base module with those rows
replaced; a merge writes them into the weight and unmerge writes back the rows it overwrote. A module whose weight
*is* the embedding's (an output head tied to the input embedding) follows: it computes with the same replaced rows,
merged or not, and saves nothing of its own. Names mirror peft's (`token_adapter.trainable_tokens_delta.<adapter>`,
`token_adapter.base_layer`) so state dicts line up key for key.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from loraguard.core.matching import is_within, no_match_message
from loraguard.core.merge_math import with_token_rows
from loraguard.reference.layers import adapter_dtype


class TokenAdapter(nn.Module):
    """The base module and each adapter's row values (peft's `TrainableTokensLayer`, by its attribute names)."""

    base_layer: nn.Module
    trainable_tokens_delta: nn.ParameterDict

    def __init__(self, base_layer: nn.Module, rows: nn.ParameterDict | None = None):
        super().__init__()
        self.base_layer = base_layer
        # A tied follower holds its leader's very container (in its state dict too, as in peft; saved once).
        self.trainable_tokens_delta = nn.ParameterDict() if rows is None else rows


class TrainableTokens(nn.Module):
    """An embedding (or a module tied to one) whose listed rows each adapter replaces with its own trained values."""

    token_adapter: TokenAdapter

    def __init__(self, base_layer: nn.Module, leader: TrainableTokens | None = None):
        super().__init__()
        rows = leader.token_adapter.trainable_tokens_delta if leader is not None else None
        self.token_adapter = TokenAdapter(base_layer, rows)
        self._leader = [leader] if leader is not None else []  # a list: not a submodule, not in the state dict
        self.indices: dict[str, list[int]] = {}
        self.merged_adapters: list[str] = []
        self._overwritten: dict[str, torch.Tensor] = {}  # the rows each merge overwrote, for unmerge
        self.active_adapters: list[str] = []
        self.disabled = False

    @property
    def base_layer(self) -> nn.Module:
        return self.token_adapter.base_layer

    @property
    def leader(self) -> TrainableTokens | None:
        """The embedding's wrapper this tied module follows (None for the embedding itself)."""
        return self._leader[0] if self._leader else None

    def base_weight(self) -> torch.Tensor:
        weight = self.base_layer.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    # -- adapters ------------------------------------------------------------------------------------------
    def add(self, name: str, indices: list[int], autocast: bool = False) -> None:
        """Give adapter `name` trainable values for rows `indices`, starting at the rows' current values (held in
        float32 on a bf16/fp16 embedding with `autocast`, as peft's autocast_adapter_dtype)."""
        if self.leader is not None:
            raise RuntimeError("a tied module follows its embedding's token adapters; add them there")
        if self.merged_adapters:
            raise RuntimeError(f"cannot add adapter {name!r} while {self.merged_adapters} are merged; unmerge first")
        weight = self.base_weight()
        self.indices[name] = list(indices)
        rows = weight.detach()[torch.tensor(indices, device=weight.device)]
        self.token_adapter.trainable_tokens_delta[name] = nn.Parameter(rows.to(adapter_dtype(weight.dtype, autocast)))

    def delete(self, name: str) -> None:
        """Remove adapter `name` (it must not be merged)."""
        if name in self.merged_adapters:
            raise RuntimeError(f"adapter {name!r} is merged; unmerge before deleting it")
        if self.leader is None and name in self.indices:
            del self.token_adapter.trainable_tokens_delta[name]
            del self.indices[name]
        self.active_adapters = [a for a in self.active_adapters if a != name]

    def adapters(self) -> list[str]:
        """Adapters with rows on this module (the leader's, for a tied module)."""
        return list(self.leader.indices if self.leader is not None else self.indices)

    def rows(self, name: str) -> tuple[list[int], torch.Tensor]:
        """Adapter `name`'s row indices and their trainable values (the leader's, for a tied module)."""
        return (self.leader or self).indices[name], self.token_adapter.trainable_tokens_delta[name]

    def _applied(self) -> list[str]:
        """The active adapters with rows here; only one may be (as in peft: each would own the rows it lists)."""
        mine = [a for a in self.active_adapters if a in self.adapters()]
        if len(mine) > 1:
            raise RuntimeError(f"adapters {mine} each train rows of this embedding; activate only one of them")
        return mine

    def with_rows(self, weight: torch.Tensor, names: list[str]) -> torch.Tensor:
        """`weight` with the rows of `names` replaced by their values (differentiable in the values; a repeated index
        takes its last occurrence's value)."""
        for name in names:
            weight = with_token_rows(weight, *self.rows(name))
        return weight

    # -- merging (a tied module's weight is the leader's: the leader's merge is its merge) -----------------------
    @torch.no_grad()
    def merge(self, names: list[str], safe: bool = False) -> None:
        """Write the rows of `names` into the weight; already merged adapters are skipped."""
        if self.leader is not None:
            return
        todo = [n for n in names if n in self.indices and n not in self.merged_adapters]
        if len(set(todo + self.merged_adapters)) > 1:
            raise RuntimeError(f"adapters {todo + self.merged_adapters} each train rows of this embedding")
        weight = self.base_weight()
        for name in todo:
            new = self.with_rows(weight, [name])
            if safe and not torch.isfinite(new).all():
                raise ValueError(f"merging adapter {name!r} gives non-finite weights; the adapter is broken")
            self._overwritten[name] = weight[torch.tensor(self.indices[name], device=weight.device)].clone()
            weight.copy_(new)
            self.merged_adapters.append(name)

    def merge_is_finite(self, names: list[str]) -> bool:
        """Would merging `names` leave the weight finite? (checked before any module changes, for safe merge)"""
        if self.leader is not None:
            return True
        todo = [n for n in names if n in self.indices and n not in self.merged_adapters]
        return all(bool(torch.isfinite(self.rows(n)[1]).all()) for n in todo)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Write back the rows each merge overwrote, last merged first."""
        weight = self.base_weight()
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight.copy_(with_token_rows(weight, self.indices[name], self._overwritten.pop(name)))

    def is_merged(self) -> bool:
        return bool((self.leader or self).merged_adapters)

    # -- forward -------------------------------------------------------------------------------------------
    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        if self.disabled and self.is_merged():
            raise RuntimeError("token adapters are merged into this embedding; unmerge() before disabling them")
        names = [] if self.disabled or self.is_merged() else self._applied()
        if not names:
            return self.base_layer(*args, **kwargs)
        # The base module's own forward, with the weight swapped: an embedding's scale, padding index and a
        # tied head's bias apply exactly as without the adapter.
        return functional_call(self.base_layer, {"weight": self.with_rows(self.base_weight(), names)}, args, kwargs)


def tied_paths(model: nn.Module, path: str) -> list[str]:
    """Modules other than `path` whose `weight` is the very tensor of `path`'s weight (a tied output head)."""
    weight = getattr(model.get_submodule(path), "weight", None)
    return [
        name
        for name, module in model.named_modules()
        if name and name != path and weight is not None and module._parameters.get("weight") is weight
    ]


def input_embedding_path(model: nn.Module) -> str:
    """Where a plain list of indices goes: the model's input embedding, else `embed_tokens` (as peft)."""
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    for name, module in model.named_modules():
        if embedding is not None and module is embedding:
            return name
    return "embed_tokens"


def token_targets(
    model: nn.Module,
    spec: list[int] | dict[str, list[int]] | None,
    candidates: list[str],
    selects: Callable[[str, list[str]], bool],
) -> dict[str, list[int]]:
    """Module path -> row indices for a `trainable_token_indices` value: a list goes to the input embedding, a
    dict names modules (dot-boundary names, like `modules_to_save`); a name that matches nothing is an error."""
    if spec is None:
        return {}
    named = spec if isinstance(spec, dict) else {input_embedding_path(model): spec}
    out: dict[str, list[int]] = {}
    for entry, indices in named.items():
        paths = [n for n in candidates if selects(n, [entry])]
        if not paths:
            names = [n for n, _ in model.named_modules() if n]
            raise ValueError(no_match_message("trainable_token_indices", [entry], names))
        out.update(dict.fromkeys(paths, list(indices)))
    return out


def check_token_target(model: nn.Module, path: str, indices: list[int], taken: list[str], tied: list[str]) -> None:
    """Refuse, naming the module, rows of something that is not an embedding, indices out of range (a repeated
    index is accepted, as peft does: it is one row), and an embedding (or a module tied to it) that this adapter also
    targets with LoRA or modules_to_save."""
    module = model.get_submodule(path)
    if isinstance(module, TrainableTokens) and module.leader is not None:
        raise ValueError(
            f"trainable_token_indices: '{path}' shares its weight with the embedding it follows; name that one"
        )
    base = module.base_layer if isinstance(module, TrainableTokens) else module
    if not isinstance(base, nn.Embedding):
        raise ValueError(
            f"trainable_token_indices: '{path}' is a {type(base).__name__}; trainable tokens are rows of an "
            "nn.Embedding"
        )
    bad = [i for i in indices if isinstance(i, bool) or not 0 <= i < base.num_embeddings]
    if bad or not indices:
        raise ValueError(
            f"trainable_token_indices for '{path}': {indices} must be row indices in "
            f"[0, {base.num_embeddings})" + (f"; out of range: {bad}" if bad else "")
        )
    clash = [p for p in [path, *tied] if p in taken or any(is_within(p, t) for t in taken)]
    if clash:
        raise ValueError(
            f"trainable_token_indices: {clash} are also LoRA targets or modules_to_save of this adapter; "
            "train an embedding's rows one way only"
        )
