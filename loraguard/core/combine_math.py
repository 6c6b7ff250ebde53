"""Weighted combination of LoRA adapters (peft's `add_weighted_adapter`) as explicit formulas over tensors.

For adapters i with factors A_i (r_i, in), B_i (out, r_i), scaling s_i and real weights w_i (any sign, zero, above
one), the combined adapter has scaling 1 (peft gives it ``r = lora_alpha = new_rank``) and:

- ``cat``: A = [w_1 s_1 A_1; w_2 s_2 A_2; ...], B = [B_1, B_2, ...]: its delta is exactly ``sum_i w_i s_i B_i A_i``.
- ``linear``, ``ties``, ``magnitude_prune``, ``dare_linear``, ``dare_ties`` (equal ranks only): the factors are
  merged separately, A with weights ``sign(w_i s_i) sqrt|w_i s_i|`` and B with ``sqrt|w_i s_i|``, by the named
  task-tensor merge (below); the delta is ``B A`` of the results (not ``sum_i w_i s_i B_i A_i``: cross terms).
- ``svd`` and ``*_svd``: the task-tensor merge of the full deltas ``s_i B_i A_i`` with weights w_i, then the best
  approximation of rank ``new_rank`` (``svd_rank``, else the largest rank): any correct result is a rank-k matrix
  whose distance to the target equals the Eckart-Young optimum ``sqrt(sum_{j>k} sigma_j^2)``.

Task-tensor merges of tensors T_i with weights v_i: ``linear``/``svd``: ``sum v_i T_i``; ``magnitude_prune``: each
T_i keeps its ``int(density * numel)`` largest magnitudes, then the weighted sum; ``ties``: pruned like that, then
only entries whose sign agrees with the majority sign (of ``sum T_i``, or of ``sum sign T_i`` for ``frequency``)
count, and each entry is divided by how many counted; ``dare_*``: random (Bernoulli) pruning rescaled by
``1/density``, then ``linear``/``ties``. With ``density >= 1`` nothing is pruned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

COMBINATION_TYPES = (
    "svd",
    "linear",
    "cat",
    "ties",
    "ties_svd",
    "dare_ties",
    "dare_linear",
    "dare_ties_svd",
    "dare_linear_svd",
    "magnitude_prune",
    "magnitude_prune_svd",
)
#: Types that merge the factors themselves, so every adapter must have the same rank.
EQUAL_RANKS = ("linear", "ties", "dare_ties", "dare_linear", "magnitude_prune")
#: Types whose result depends on random draws (DARE's Bernoulli pruning) unless nothing is pruned.
RANDOM = ("dare_ties", "dare_linear", "dare_ties_svd", "dare_linear_svd")

SignMethod = Literal["total", "frequency"]


def is_svd(combination_type: str) -> bool:
    return combination_type.endswith("svd")


def task_merge_kind(combination_type: str) -> str:
    """The task-tensor merge a combination type uses: linear, ties, magnitude_prune, dare_linear or dare_ties."""
    if combination_type not in COMBINATION_TYPES:
        raise ValueError(f"unknown combination_type {combination_type!r}; expected one of {COMBINATION_TYPES}")
    base = combination_type.removesuffix("_svd")
    return "linear" if base in ("svd", "cat") else base


def new_rank(combination_type: str, ranks: Sequence[int], svd_rank: int | None = None) -> int:
    """The combined adapter's rank; raises ValueError where the type needs equal ranks and they differ."""
    if combination_type in EQUAL_RANKS:
        if len(set(ranks)) != 1:
            raise ValueError(
                f"combination_type={combination_type!r} merges the factors themselves: every adapter must have the "
                f"same r, got {list(ranks)}; use 'cat' or 'svd' for different ranks"
            )
        return ranks[0]
    if combination_type == "cat":
        return sum(ranks)
    return svd_rank or max(ranks)


def factor_weights(weight: float, scale: float) -> tuple[float, float]:
    """Weights for A and B in the factor-merging types: the sign goes on A only, so ``B A`` carries ``w s``."""
    ws = weight * scale
    root = math.sqrt(abs(ws))
    return (root if ws >= 0 else -root), root


def prune_magnitude(t: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density * numel)`` entries of largest magnitude, zero the rest (all of them if density >= 1)."""
    if density >= 1:
        return t
    k = int(density * t.numel())
    keep = torch.zeros(t.numel(), dtype=t.dtype)
    if k:
        keep[t.abs().reshape(-1).topk(k).indices] = 1
    return t * keep.reshape(t.shape)


def pruning_margin(t: torch.Tensor, density: float) -> float:
    """The gap between the smallest kept and the largest dropped magnitude (inf if nothing is pruned).

    A gap within rounding error means another computation of the same tensor may keep another entry.
    """
    k = int(density * t.numel())
    if density >= 1 or k == 0 or k >= t.numel():
        return math.inf
    top = t.abs().reshape(-1).double().topk(k + 1).values
    return (top[k - 1] - top[k]).item()


def majority_sign(stacked: torch.Tensor, method: SignMethod = "total") -> torch.Tensor:
    """+1/-1 per entry: the sign of the sum over tensors (total) or of the sum of their signs (frequency)."""
    votes = stacked.sum(dim=0) if method == "total" else stacked.sign().sum(dim=0)
    return torch.where(votes >= 0, 1, -1).to(stacked.dtype)


def task_merge(
    kind: str,
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float],
    density: float = 1.0,
    method: SignMethod = "total",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Merge task tensors (see the module docstring) in their own dtype; `generator` drives DARE's pruning."""
    if kind in ("ties", "magnitude_prune"):
        tensors = [prune_magnitude(t, density) for t in tensors]
    elif kind in ("dare_linear", "dare_ties") and density < 1:
        tensors = [t * torch.bernoulli(torch.full_like(t, density), generator=generator) / density for t in tensors]
    stacked = torch.stack(list(tensors))
    w = torch.tensor(list(weights), dtype=stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
    if kind in ("ties", "dare_ties"):
        agree = stacked.sign() == majority_sign(stacked, method)
        counted = agree.sum(dim=0).clamp(min=1).to(stacked.dtype)
        return (stacked * w * agree).sum(dim=0) / counted
    return (stacked * w).sum(dim=0)


def combined_factors(
    combination_type: str,
    factors: Sequence[tuple[torch.Tensor, torch.Tensor, float]],
    weights: Sequence[float],
    density: float = 1.0,
    method: SignMethod = "total",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of the combined adapter at one module, for ``cat`` and the factor-merging types; scaling 1.

    `factors` holds (A_i, B_i, s_i) of the adapters present at the module, in the order given to the combination.
    """
    if combination_type == "cat":
        a = torch.cat([w * s * a for (a, _, s), w in zip(factors, weights)], dim=0)
        return a, torch.cat([b for _, b, _ in factors], dim=1)
    if combination_type not in EQUAL_RANKS:
        raise ValueError(f"combination_type {combination_type!r} is not a factor merge; see combined_delta_target")
    shapes = {tuple(a.shape) for a, _, _ in factors}
    if len(shapes) > 1:
        raise ValueError(
            f"combination_type={combination_type!r} needs the same rank at every module; the factors here have "
            f"shapes {sorted(shapes)} (a rank_pattern?); use 'cat' or 'svd'"
        )
    pairs = [factor_weights(w, s) for (_, _, s), w in zip(factors, weights)]
    kind = task_merge_kind(combination_type)
    a = task_merge(kind, [a for a, _, _ in factors], [p[0] for p in pairs], density, method, generator)
    b = task_merge(kind, [b for _, b, _ in factors], [p[1] for p in pairs], density, method, generator)
    return a, b


def combined_delta_target(
    combination_type: str,
    deltas: Sequence[torch.Tensor],
    weights: Sequence[float],
    density: float = 1.0,
    method: SignMethod = "total",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """For the svd types: the matrix whose best low-rank approximation is the combined delta (of s_i B_i A_i)."""
    if not is_svd(combination_type):
        raise ValueError(f"combination_type {combination_type!r} is not an svd type")
    return task_merge(task_merge_kind(combination_type), deltas, weights, density, method, generator)


def as_matrix(delta: torch.Tensor) -> torch.Tensor:
    """A delta as the matrix its rank is measured on: conv kernels flattened to (out, in * k...)."""
    return delta.reshape(delta.shape[0], -1) if delta.dim() > 2 else delta


def truncated_svd(target: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with ``B A`` the best rank-`rank` approximation of `target` (as a matrix): B = U S, A = Vh."""
    u, s, vh = torch.linalg.svd(as_matrix(target), full_matrices=False)
    return vh[:rank], u[:, :rank] * s[:rank]


def optimal_residual(target: torch.Tensor, rank: int) -> float:
    """Eckart-Young: the least Frobenius distance from `target` (as a matrix) to any matrix of rank <= `rank`."""
    s = torch.linalg.svdvals(as_matrix(target).double())
    return s[rank:].pow(2).sum().sqrt().item()
