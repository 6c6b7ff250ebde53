"""Comparison primitives every invariant is built from; each failure says what differed, where and by how much.

Exact comparisons (round-trips, isolation) use `torch.equal`; numeric ones use the tolerance table. An
"effect" check comes before any closeness check, so an adapter that does nothing cannot pass for the wrong reason.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping

import torch

from loraguard.core.tolerance import EFFECT_MARGIN, arbitrate, bound, max_diff


class InvariantViolation(AssertionError):
    """A broken promise of a LoRA library; the message is the report a user reads."""


#: How many comparisons have held in this process (the registry tells a partial run from a skipped one with it).
held = 0


def expect(ok: bool, message: str) -> None:
    """Raise InvariantViolation with `message` unless `ok`."""
    __tracebackhide__ = True
    global held
    if not ok:
        raise InvariantViolation(message)
    held += 1


def assert_close(
    got: torch.Tensor,
    want: torch.Tensor,
    dtype: torch.dtype,
    what: str,
    depth: int = 1,
    via: torch.Tensor | None = None,
) -> float:
    """`got` equals `want` within the dtype's bound (see tolerance.bound for `via`); returns the difference seen."""
    __tracebackhide__ = True
    expect(got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != expected {tuple(want.shape)}")
    expect(bool(torch.isfinite(got).all()), f"{what}: result has NaN or Inf")
    diff, allowed = max_diff(got, want), bound(want, dtype, depth, via)
    expect(diff <= allowed, f"{what}: max |difference| {diff:.3g} exceeds the {dtype} bound {allowed:.3g}")
    return diff


def assert_close_to_exact(
    got: torch.Tensor,
    want: torch.Tensor,
    exact: Callable[[], torch.Tensor],
    dtype: torch.dtype,
    what: str,
    depth: int = 1,
) -> float:
    """`got` equals `want` within the bound or, beyond it, is no further from the float64 answer `exact()` than
    the dtype allows (core.tolerance.arbitrate); `exact` is only computed when the bound is exceeded."""
    __tracebackhide__ = True
    expect(got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != expected {tuple(want.shape)}")
    expect(bool(torch.isfinite(got).all()), f"{what}: result has NaN or Inf")
    diff, allowed = max_diff(got, want), bound(want, dtype, depth)
    if diff <= allowed:
        expect(True, "")
        return diff
    violated, why = arbitrate(got, want, exact(), dtype, depth)
    expect(not violated, f"{what}: max |difference| {diff:.3g} exceeds the {dtype} bound {allowed:.3g}; {why}")
    return diff


class Inconclusive(Exception):
    """The scenario cannot show the promise either way (an effect too small for the dtype): not a failure."""


def assert_effect(
    with_adapter: torch.Tensor, without: torch.Tensor, dtype: torch.dtype, what: str, depth: int = 1
) -> float:
    """The adapter changes the output by well over the comparison bound (else equality checks prove nothing).

    No change at all is a violation (an all-zero lora_B, a delta lost in the dtype); a change that is real
    but under the margin makes the scenario inconclusive.
    """
    effect, allowed = max_diff(with_adapter, without), bound(without, dtype, depth)
    expect(
        effect > allowed,
        f"{what}: the adapter changes the output by {effect:.3g}, within the {dtype} bound {allowed:.3g}: it has "
        "no effect (all-zero lora_B, or its delta vanishes in the dtype)",
    )
    if effect <= EFFECT_MARGIN * allowed:
        raise Inconclusive(
            f"{what}: the adapter's effect {effect:.3g} is under {EFFECT_MARGIN:g} x the {dtype} "
            f"bound {allowed:.3g}; too weak a scenario to compare outputs"
        )
    return effect


def assert_equal(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Bit-identical tensors (same shape, dtype and values)."""
    __tracebackhide__ = True
    expect(got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}")
    expect(got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}")
    if not torch.equal(got.cpu(), want.cpu()):
        raise InvariantViolation(f"{what}: values differ (max |difference| {max_diff(got, want):.3g})")


def assert_same_keys(got: Collection[str], want: Collection[str], what: str) -> None:
    """Equal key sets, reporting what appeared and what vanished."""
    extra, missing = sorted(set(got) - set(want)), sorted(set(want) - set(got))
    expect(
        not extra and not missing,
        f"{what}: key sets differ; unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}, "
        f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}",
    )


def assert_state_equal(got: Mapping[str, torch.Tensor], want: Mapping[str, torch.Tensor], what: str) -> None:
    """Two state dicts with the same keys and bit-identical tensors."""
    assert_same_keys(got, want, what)
    for key in sorted(want):
        assert_equal(got[key], want[key], f"{what}: {key}")


def assert_no_empty_tensors(state: Mapping[str, torch.Tensor], what: str) -> None:
    """No zero-size tensor: the mark of a ZeRO-3 parameter saved without gathering."""
    empty = sorted(k for k, v in state.items() if v.numel() == 0)
    expect(
        not empty,
        f"{what}: {len(empty)} tensor(s) have no elements, e.g. {empty[0] if empty else ''}: "
        "parameters were saved un-gathered (ZeRO-3 shards); save inside GatheredParameters",
    )
