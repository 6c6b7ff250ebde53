"""The one tolerance table: how far two computations that are mathematically equal may drift, per dtype.

Bounds are relative to the magnitude of the expected values (max-norm), so they hold for any weight scale.
Round-trips (save/load, unmerge of an exactly representable delta) are not here: they use `torch.equal`.

The rule for two low-precision results that should agree (merged vs unmerged outputs): a difference within
`bound` is fine. A larger one is judged against a float64 recomputation of the exact answer (`arbitrate`): it is
a violation only when the library's result is further from the exact answer than the dtype allows, that is
further than both the bound and twice the distance of the other path (computed in the same dtype, it shows how
far this dtype's rounding goes on this very computation: wide fused layers, long sums). Ordinary rounding moves
both paths about equally far from exact; a wrong merge moves one of them by the size of the error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    """A max-norm bound: ``max|got - want| <= rel * max|want| * depth + floor``."""

    rel: float
    floor: float
    reason: str


TABLE: dict[torch.dtype, Tolerance] = {
    torch.float64: Tolerance(2.0**-40, 1e-12, "float64: reordered sums drift a few ulps of eps 2^-52"),
    torch.float32: Tolerance(2.0**-17, 1e-6, "float32: (W + sBA)x vs Wx + sB(Ax) reorder sums; 64 ulps of eps 2^-23"),
    torch.float16: Tolerance(2.0**-8, 1e-4, "float16: merged weights and activations round to eps 2^-10; 4 ulps"),
    torch.bfloat16: Tolerance(2.0**-6, 1e-3, "bfloat16: merged weights and activations round to eps 2^-8; 4 ulps"),
}

#: An adapter's effect must exceed the bound by this factor before "equal" means anything.
EFFECT_MARGIN = 10.0


def tolerance(dtype: torch.dtype) -> Tolerance:
    """The table entry for `dtype`; an unknown dtype is an error, never a silent loose default."""
    try:
        return TABLE[dtype]
    except KeyError:
        raise ValueError(f"no tolerance defined for {dtype}; add one to loraguard.core.tolerance.TABLE") from None


def bound(want: torch.Tensor, dtype: torch.dtype, depth: int = 1, via: torch.Tensor | None = None) -> float:
    """The allowed max-abs difference when comparing against `want`, computed in `dtype` through `depth` layers.

    `via` is an intermediate the result was rounded through (the merged weight, for an unmerge): rounding error
    scales with the largest magnitude seen, not only with the final one.
    """
    tol = tolerance(dtype)
    scale = max((t.detach().abs().max().item() for t in (want, via) if t is not None and t.numel()), default=0.0)
    return tol.rel * scale * depth + tol.floor


def max_diff(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute elementwise difference, in float64 so the comparison itself adds no error."""
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: {tuple(got.shape)} vs {tuple(want.shape)}")
    if got.numel() == 0:
        return 0.0
    return (got.detach().double() - want.detach().double()).abs().max().item()


def arbitrate(
    got: torch.Tensor, want: torch.Tensor, exact: torch.Tensor, dtype: torch.dtype, depth: int = 1
) -> tuple[bool, str]:
    """(violation?, explanation) for `got` vs `want` once their difference exceeds the bound (module docstring).

    `exact` is the float64 answer both should approximate; `got` is the result under test.
    """
    allowed = bound(exact, dtype, depth)
    err_got, err_want = max_diff(got, exact), max_diff(want, exact)
    limit = max(allowed, 2.0 * err_want)
    text = (
        f"against the float64 answer: result off by {err_got:.3g}, the other path by {err_want:.3g}, "
        f"{'within' if err_got <= limit else 'beyond'} the allowed {limit:.3g}"
    )
    return err_got > limit, text
