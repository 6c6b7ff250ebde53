"""One merged tensor checked block by block: against ``W + s * B @ A``, or bit-equal to the tensor it must be."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loraguard.audit.rules import Finding
from loraguard.audit.safetensors_header import TensorRef
from loraguard.audit.tensors import BLOCK_BYTES, TensorSource, torch_dtype
from loraguard.core.config import LoraConfig

if TYPE_CHECKING:
    import torch

    from loraguard.core.merge_math import LayerKind


@dataclass(frozen=True)
class Target:
    """One base tensor the adapter changes, and how."""

    key: str
    module: str
    a: TensorRef
    b: TensorRef
    kind: LayerKind


def check_equal(
    want: TensorRef, got: TensorRef, want_source: TensorSource, got_source: TensorSource, what: str
) -> list[Finding]:
    """Bit-equal when the dtypes agree; otherwise equal within the merged dtype's bound."""
    if want.shape != got.shape:
        return [Finding("LG503", got.file, f"shape {list(got.shape)} but {what} has {list(want.shape)}", got.name)]
    if want.dtype == got.dtype:
        for offset in range(0, got.nbytes, BLOCK_BYTES):
            n = min(BLOCK_BYTES, got.nbytes - offset)
            if want_source.read_bytes(want, offset, n) != got_source.read_bytes(got, offset, n):
                return [
                    Finding("LG504", got.file, f"differs from {what} (first at byte {offset} of the tensor)", got.name)
                ]
        return []
    stats = _Stats()
    for start, stop in got_source.row_blocks(got):
        stats.add(want_source.load_rows(want, start, stop), got_source.load_rows(got, start, stop))
    return stats.verdict(got, "LG504", f"differs from {what}")


def _factor_rows(
    kind: str, fan_in_fan_out: bool, a: torch.Tensor, b: torch.Tensor, start: int, stop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The factor slices that produce rows `start:stop` of the delta, in the base weight's layout."""
    if kind == "embedding" or (kind == "linear" and fan_in_fan_out):
        return a[:, start:stop], b  # delta = (B @ A).T: its rows are A's columns
    return a, b[start:stop]


def check_layouts(
    config: LoraConfig, target: Target, adapter: TensorSource, base: TensorSource, merged: TensorSource
) -> list[Finding]:
    """Check with the config's fan_in_fan_out; if the delta only fits the base transposed the other way, say so
    (peft transposes GPT-2 Conv1D layers whatever the config says) and check with the layout that fits."""
    if config.use_dora:
        return [
            Finding(
                "LG506",
                merged.refs[target.key].file,
                "DoRA rescales the merged weight by its magnitude vector; only plain LoRA merges are verified",
                target.key,
            )
        ]
    fifo = config.fan_in_fan_out and target.kind == "linear"
    finding = _check_target(config, target, adapter, base, merged, fifo)
    if finding is None or finding.rule != "LG503" or target.kind != "linear":
        return [finding] if finding else []
    retry = _check_target(config, target, adapter, base, merged, not fifo)
    if retry is not None and retry.rule == "LG503":
        return [finding]
    note = Finding(
        "LG507",
        finding.file,
        f"the config says fan_in_fan_out={str(fifo).lower()} but the factors fit this "
        f"weight only with fan_in_fan_out={str(not fifo).lower()} (GPT-2 Conv1D layout); checked that way. "
        "Save the config with the layout the layers use",
        target.key,
    )
    return [note] + ([retry] if retry else [])


def _check_target(
    config: LoraConfig, target: Target, adapter: TensorSource, base: TensorSource, merged: TensorSource, fifo: bool
) -> Finding | None:
    import torch

    from loraguard.core.merge_math import merged_weight
    from loraguard.core.tolerance import max_diff

    scale = config.scaling_for(target.module)
    base_ref, got_ref = base.refs[target.key], merged.refs[target.key]
    a_full, b_full = adapter.load(target.a), adapter.load(target.b)
    stats = _Stats()
    for start, stop in merged.row_blocks(got_ref):
        base_rows, got_rows = base.load_rows(base_ref, start, stop), merged.load_rows(got_ref, start, stop)
        a, b = _factor_rows(target.kind, fifo, a_full, b_full, start, stop)
        try:
            want = merged_weight(base_rows, a, b, scale, target.kind, fifo)
        except (ValueError, RuntimeError) as err:
            return Finding("LG503", got_ref.file, f"the adapter's factors do not fit this tensor: {err}", target.key)
        stats.effect = max(stats.effect, max_diff(want, base_rows))
        stats.equal_to_base = (
            stats.equal_to_base and base_rows.dtype == got_rows.dtype and torch.equal(base_rows, got_rows)
        )
        stats.add(want, got_rows)
    return stats.merged_verdict(got_ref, scale)


@dataclass
class _Stats:
    """Running max-norm comparison over blocks: the tolerance bound needs the max of the expected values."""

    diff: float = 0.0
    want_max: float = 0.0
    effect: float = 0.0
    equal_to_base: bool = True

    def add(self, want: torch.Tensor, got: torch.Tensor) -> None:
        from loraguard.core.tolerance import max_diff

        d = max_diff(got, want)
        self.diff = d if math.isnan(d) else max(self.diff, d)
        if want.numel():
            self.want_max = max(self.want_max, want.abs().max().item())  # abs and max are exact in any dtype

    def bound(self, ref: TensorRef) -> float | None:
        import torch

        from loraguard.core.tolerance import bound

        dtype = torch_dtype(ref.dtype)
        if dtype is None:  # F4, F6: no tolerance defined
            return None
        try:
            return bound(torch.tensor([self.want_max], dtype=torch.float64), dtype)
        except ValueError:
            return None

    def verdict(self, ref: TensorRef, rule: str, what: str) -> list[Finding]:
        limit = self.bound(ref)
        if limit is None:
            return [Finding("LG506", ref.file, f"no tolerance is defined for {ref.dtype}; not verified", ref.name)]
        if not self.diff <= limit:
            return [
                Finding(
                    rule,
                    ref.file,
                    f"{what}: max difference {self.diff:.3g} > bound {limit:.3g} for {ref.dtype}",
                    ref.name,
                )
            ]
        return []

    def merged_verdict(self, ref: TensorRef, scale: float) -> Finding | None:
        from loraguard.core.tolerance import EFFECT_MARGIN

        limit = self.bound(ref)
        if limit is None:
            return Finding("LG506", ref.file, f"no tolerance is defined for {ref.dtype}; not verified", ref.name)
        if not self.diff <= limit:  # also catches NaN
            if self.equal_to_base and self.effect > 0:
                return Finding(
                    "LG501",
                    ref.file,
                    f"identical to the base weight although s * B @ A changes it by up to "
                    f"{self.effect:.3g} (s={scale:g}): the merge applied nothing",
                    ref.name,
                )
            return Finding(
                "LG502",
                ref.file,
                f"max |merged - (W + s*B@A)| = {self.diff:.3g} > bound {limit:.3g} for "
                f"{ref.dtype} (s={scale:g}); check scaling (r, lora_alpha, use_rslora, patterns) and "
                "fan_in_fan_out",
                ref.name,
            )
        if self.effect <= EFFECT_MARGIN * limit:
            return Finding(
                "LG505",
                ref.file,
                f"the adapter changes this tensor by at most {self.effect:.3g}, within "
                f"{EFFECT_MARGIN:g}x the {ref.dtype} bound {limit:.3g}: a merged and an unmerged tensor look "
                "the same here",
                ref.name,
            )
        return None
