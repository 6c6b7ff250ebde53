"""`audit-merge`: does a merged model equal ``W + s * B @ A`` tensor by tensor, and did the merge do anything?

Streams one block of rows at a time (base, merged and the matching slice of the factors), so memory stays near
one block whatever the model size. The formula is `loraguard.core.merge_math.merged_weight`, the scale
`LoraConfig.scaling_for`, the bound `loraguard.core.tolerance`: the same rules the reference implementation uses.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from loraguard.audit.adapter import Factors
from loraguard.audit.checkpoint import audit_paths
from loraguard.audit.discover import INDEX_SUFFIX
from loraguard.audit.file_reads import header_of, index_headers, read_json_object
from loraguard.audit.merge_check import Target, check_equal, check_layouts
from loraguard.audit.result import AuditResult, Options
from loraguard.audit.rules import Finding
from loraguard.audit.safe_io import Unusable
from loraguard.audit.safetensors_header import Header, TensorRef
from loraguard.audit.tensors import TensorSource
from loraguard.core.config import CONFIG_NAME, WEIGHTS_NAME, ConfigError, LoraConfig
from loraguard.core.keys import BARE_ROLES, parse_factor_key, split, strip_prefix
from loraguard.core.matching import PatternError, parameter_selected

if TYPE_CHECKING:
    from loraguard.core.merge_math import LayerKind


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
    parameters = _parameter_keys(config, base)
    # a wrapper of target_parameters saves its factors under the module (``experts``, ``experts.base_layer``): the
    # key names no parameter, so only a Linear-style `weight` the config names is checked against the formula
    targets = {k: t for k, t in targets.items() if k in parameters or not config.wraps_parameters(t.module)}
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
            for finding in check_layouts(config, targets[key], adapter, base, merged):
                (no_op if finding.rule == "LG501" else out).append(finding)
        elif key in copies:
            out += check_equal(copies[key], got, adapter, merged, "the adapter's saved copy of this module")
        elif key in parameters:
            out.append(
                Finding(
                    "LG506",
                    got.file,
                    "a target_parameters tensor (experts: one delta per expert, factors saved under the module); "
                    "this audit does not verify it",
                    key,
                )
            )
        else:
            out += check_equal(base_ref, got, base, merged, "the base model, and the adapter does not touch it")
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


def _parameter_keys(config: LoraConfig, base: TensorSource) -> set[str]:
    """Base tensors a `target_parameters` entry selects: ``<module>.<parameter>`` equal to it or ending in ``.<it>``."""
    return {k for k in base.refs if parameter_selected(k, config.target_parameters or [])}
