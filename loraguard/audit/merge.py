"""`audit-merge`: does a merged model equal ``W + s * B @ A`` tensor by tensor, and did the merge do anything?

Streams one block of rows at a time (base, merged and the matching slice of the factors), so memory stays near
one block whatever the model size. The formula is `loraguard.core.merge_math.merged_weight`, the scale
`LoraConfig.scaling_for`, the bound `loraguard.core.tolerance`: the same rules the reference implementation uses.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loraguard.audit.adapter import Factors
from loraguard.audit.checkpoint import (
    INDEX_SUFFIX,
    AuditResult,
    Options,
    Unusable,
    audit_paths,
    header_of,
    index_headers,
    read_json_object,
)
from loraguard.audit.rules import Finding
from loraguard.audit.safetensors_header import Header, TensorRef
from loraguard.audit.tensors import BLOCK_BYTES, TensorSource, torch_dtype
from loraguard.core.config import CONFIG_NAME, WEIGHTS_NAME, ConfigError, LoraConfig
from loraguard.core.keys import BARE_ROLES, parse_factor_key, split, strip_prefix
from loraguard.core.matching import PatternError

if TYPE_CHECKING:
    from loraguard.core.merge_math import LayerKind


@dataclass(frozen=True)
class Target:
    """One base tensor the adapter changes, and how."""

    key: str
    module: str
    a: TensorRef
    b: TensorRef
    kind: LayerKind


def model_headers(path: str, result: AuditResult) -> list[Header]:
    """Headers of a model given as a .safetensors file, an index, or a directory holding either."""
    if path.endswith(INDEX_SUFFIX):
        return index_headers(path, result)
    if not os.path.isdir(path):
        return [header_of(path, result)]
    names = sorted(os.listdir(path))
    indexes = [n for n in names if n.endswith(INDEX_SUFFIX)]
    if len(indexes) == 1:
        return index_headers(os.path.join(path, indexes[0]), result)
    files = [n for n in names if n.endswith(".safetensors")]
    if indexes or not files:
        raise Unusable(
            Finding(
                "LG002",
                path,
                f"expected one *{INDEX_SUFFIX} or *.safetensors files here, found "
                f"{len(indexes)} index(es) and {len(files)} safetensors file(s)",
            )
        )
    return [header_of(os.path.join(path, n), result) for n in files]


def audit_merge(base: str, adapter: str, merged: str) -> AuditResult:
    """The adapter's own audit, then every merged tensor against base + delta (or base, or the saved copy)."""
    result = audit_paths([adapter], Options())
    if result.unusable:
        return result
    try:
        config = LoraConfig.from_json_dict(read_json_object(os.path.join(adapter, CONFIG_NAME), AuditResult()))
        adapter_source = TensorSource.from_headers([header_of(os.path.join(adapter, WEIGHTS_NAME), AuditResult())])
        base_source = TensorSource.from_headers(model_headers(base, result))
        merged_source = TensorSource.from_headers(model_headers(merged, result))
    except ConfigError:
        return result  # already reported by the adapter audit (LG206): without a config nothing can be checked
    except Unusable as err:
        result.findings.append(err.finding)
        return result
    if any(f.rule == "LG209" for f in result.findings):
        return result  # a config regex that does not finish: the scale of each layer cannot be known
    with adapter_source, base_source, merged_source:
        try:
            result.findings += _compare(config, adapter_source, base_source, merged_source)
        except OSError as err:
            result.findings.append(Finding("LG001", merged, f"read failed: {err.strerror or err}"))
        except PatternError as err:  # a rank/alpha pattern that times out on a module only the merge looks up
            result.findings.append(Finding("LG209", os.path.join(adapter, CONFIG_NAME), str(err)))
    return result


def _targets(adapter: TensorSource) -> tuple[dict[str, Target], dict[str, TensorRef], list[TensorRef]]:
    """Base keys the factors change, base keys replaced by a saved copy, and lora_B biases (not verified)."""
    layers: dict[str, Factors] = {}
    copies: dict[str, TensorRef] = {}
    biases: list[TensorRef] = []
    for name, ref in adapter.refs.items():
        parsed = parse_factor_key(name)
        if parsed is None:
            segs = split(strip_prefix(name))
            base_key = ".".join(segs[:-2] + ["bias"]) if segs[-2:] == ["base_layer", "bias"] else ".".join(segs)
            copies[base_key] = ref
            continue
        slot = layers.setdefault(parsed.module, Factors())
        if parsed.role.endswith("_A"):
            slot.a = ref
        elif split(parsed.param)[-1:] == ["bias"]:
            biases.append(ref)
        elif parsed.role.endswith("_B"):
            slot.b = ref
    targets = {}
    for module, f in layers.items():
        if f.a is None or f.b is None or f.a.numel == 0 or f.b.numel == 0:
            continue  # the adapter audit reports it (LG301, LG303)
        a_key = parse_factor_key(f.a.name)  # never None: `f.a` was filed under the role it parsed to
        kind: LayerKind = "conv" if len(f.a.shape) > 2 else "linear"
        if a_key is not None and a_key.role in BARE_ROLES:
            kind = "embedding"
        targets[f"{module}.weight"] = Target(f"{module}.weight", module, f.a, f.b, kind)
    return targets, copies, biases


def _compare(config: LoraConfig, adapter: TensorSource, base: TensorSource, merged: TensorSource) -> list[Finding]:
    out: list[Finding] = []
    targets, copies, biases = _targets(adapter)
    merged_file = next(iter(merged.refs.values())).file if merged.refs else ""
    only_base = sorted(set(base.refs) - set(merged.refs))
    only_merged = sorted(set(merged.refs) - set(base.refs))
    for keys, where, other in ((only_base, "base", "merged"), (only_merged, "merged", "base")):
        if keys:
            out.append(
                Finding(
                    "LG503",
                    merged_file,
                    f"{len(keys)} tensor(s) in the {where} model are missing from the {other} model, e.g. '{keys[0]}'",
                )
            )
    for key in sorted((set(targets) | set(copies)) - set(base.refs)):
        out.append(
            Finding(
                "LG503",
                merged_file,
                f"the adapter changes '{key}', which the base model does not hold; is this the adapter's base model?",
            )
        )
    for ref in biases:
        out.append(
            Finding(
                "LG506", ref.file, "lora_B bias merges into the layer's bias; this audit does not verify it", ref.name
            )
        )
    no_op: list[Finding] = []
    for key in [k for k in merged.refs if k in base.refs]:
        got, base_ref = merged.refs[key], base.refs[key]
        if got.shape != base_ref.shape:
            out.append(
                Finding(
                    "LG503",
                    got.file,
                    f"shape {list(got.shape)} in the merged model, {list(base_ref.shape)} in the base",
                    key,
                )
            )
        elif key in targets:
            for finding in _check_layouts(config, targets[key], adapter, base, merged):
                (no_op if finding.rule == "LG501" else out).append(finding)
        elif key in copies:
            out += _check_equal(copies[key], got, adapter, merged, "the adapter's saved copy of this module")
        else:
            out += _check_equal(base_ref, got, base, merged, "the base model, and the adapter does not touch it")
    if len(no_op) > 1 and len(no_op) == len([k for k in targets if k in merged.refs]):
        return out + [
            Finding(
                "LG501",
                merged_file,
                f"all {len(no_op)} tensors the adapter changes are identical to the "
                "base model: the merge applied nothing (peft's key-mismatch bug: check the adapter's key "
                f"format); e.g. '{no_op[0].key}'",
            )
        ]
    return out + no_op


def _check_equal(
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


def _factor_rows(kind: str, fan_in_fan_out: bool, a, b, start: int, stop: int):
    """The factor slices that produce rows `start:stop` of the delta, in the base weight's layout."""
    if kind == "embedding" or (kind == "linear" and fan_in_fan_out):
        return a[:, start:stop], b  # delta = (B @ A).T: its rows are A's columns
    return a, b[start:stop]


def _check_layouts(
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

    def add(self, want, got) -> None:
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
