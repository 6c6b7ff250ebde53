"""Adapter rules: saved keys against peft's format and the config, factor pairs and ranks, and tensor values.

Key parsing, name matching and rank lookup come from `loraguard.core.keys`, `loraguard.core.matching` and
`loraguard.core.config`, the same code the reference implementation saves and loads with.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from loraguard.audit.rules import Finding
from loraguard.audit.safetensors_header import TensorRef
from loraguard.audit.tensors import TensorSource, bit_checkable
from loraguard.core.config import LoraConfig
from loraguard.core.keys import (
    MAGNITUDE,
    PEFT_PREFIX,
    TOKENS,
    embedded_adapter_name,
    parse_factor_key,
    split,
    strip_prefix,
)
from loraguard.core.matching import ALL_LINEAR, PatternError, ambiguous_entries, false_suffix_matches, spec_matches

_A_ROLES = {"lora_A": "lora_B", "lora_embedding_A": "lora_embedding_B"}
_B_ROLES = {b: a for a, b in _A_ROLES.items()}


@dataclass
class Factors:
    """One LoRA layer's factor tensors, found by module path."""

    a: TensorRef | None = None
    b: TensorRef | None = None
    bias: TensorRef | None = None
    magnitude: TensorRef | None = None  # DoRA's lora_magnitude_vector


@dataclass
class KeyLayout:
    """The keys of an adapter file sorted by what they are."""

    factors: dict[str, Factors] = field(default_factory=lambda: defaultdict(Factors))
    others: list[TensorRef] = field(default_factory=list)
    flagged: set[str] = field(default_factory=set)


def audit_tensors(
    source: TensorSource,
    config: LoraConfig | None,
    on_read: Callable[[int], None] = lambda n: None,
    is_adapter: bool = True,
) -> list[Finding]:
    """All adapter rules for one checkpoint; with `config` None the config-dependent rules are skipped.

    `is_adapter` False audits a plain model file: only sizes and values, since its keys follow no adapter format.
    """
    findings: list[Finding] = []
    layout = KeyLayout()
    for ref in source.refs.values():
        if ref.numel == 0:
            findings.append(
                Finding(
                    "LG303",
                    ref.file,
                    f"shape {list(ref.shape)} holds no elements: the parameter was "
                    "saved un-gathered (DeepSpeed ZeRO-3); save inside deepspeed.zero.GatheredParameters",
                    ref.name,
                )
            )
            layout.flagged.add(ref.name)
        if is_adapter:
            _classify(ref, layout, findings)
    if is_adapter:
        try:
            findings += _pair_and_rank(layout, config)
            if config is not None:
                findings += _against_config(layout, config, source)
        except PatternError as err:  # a config regex that backtracks without end: stop the config checks here
            findings.append(Finding("LG209", ref_file(source), f"{err}; the config-dependent checks stopped here"))
    findings += _values(source, layout, on_read)
    return findings


def _classify(ref: TensorRef, layout: KeyLayout, findings: list[Finding]) -> None:
    embedded = embedded_adapter_name(ref.name)
    if embedded:
        findings.append(
            Finding(
                "LG201",
                ref.file,
                f"{embedded}: peft saves keys without the adapter name and will "
                "silently skip this tensor on load; rename the key without it",
                ref.name,
            )
        )
    parsed = parse_factor_key(ref.name)
    if parsed is None:
        layout.others.append(ref)
        return
    slot = layout.factors[parsed.module]
    if parsed.role in _A_ROLES:
        slot.a = ref
    elif parsed.role in _B_ROLES and split(parsed.param)[-1:] == ["bias"]:
        slot.bias = ref
    elif parsed.role in _B_ROLES:
        slot.b = ref
    elif parsed.role == MAGNITUDE:
        slot.magnitude = ref


def _pair_and_rank(layout: KeyLayout, config: LoraConfig | None) -> list[Finding]:
    out = []
    for module, f in layout.factors.items():
        lone = _lone(f)
        if lone is not None:
            have, want = lone
            out.append(
                Finding("LG301", have.file, f"no {want} for module '{module}': the layer cannot be applied", have.name)
            )
            continue
        if f.a is None or f.b is None or f.a.name in layout.flagged or f.b.name in layout.flagged:
            continue
        if f.a.dtype != f.b.dtype:
            out.append(
                Finding(
                    "LG307",
                    f.a.file,
                    f"lora_A is {f.a.dtype} but lora_B is {f.b.dtype} for module '{module}'",
                    f.a.name,
                )
            )
        rank_a = f.a.shape[0] if f.a.shape else None
        rank_b = f.b.shape[1] if len(f.b.shape) > 1 else None
        if rank_a != rank_b:
            out.append(
                Finding(
                    "LG302",
                    f.a.file,
                    f"module '{module}': lora_A has rank {rank_a} (shape {list(f.a.shape)}) but "
                    f"lora_B has rank {rank_b} (shape {list(f.b.shape)})",
                    f.a.name,
                )
            )
        elif config is not None and rank_a != config.rank_for(module) and not config.wraps_parameters(module):
            # (an expert stack's factors hold r x experts rows, and the key does not say which parameter they adapt)
            out.append(
                Finding(
                    "LG302",
                    f.a.file,
                    f"module '{module}' has rank {rank_a} but the config gives r="
                    f"{config.rank_for(module)} (r / rank_pattern); the config and weights do not belong together",
                    f.a.name,
                )
            )
    return out


def _lone(f: Factors) -> tuple[TensorRef, str] | None:
    """The one factor of a half pair and the name of the missing one; None for a full or empty pair."""
    if f.a is not None and f.b is None:
        return f.a, "lora_B"
    if f.b is not None and f.a is None:
        return f.b, "lora_A"
    return None


def _against_config(layout: KeyLayout, config: LoraConfig, source: TensorSource) -> list[Finding]:
    out: list[Finding] = []
    if not layout.factors:
        some = next(iter(source.refs.values()), None)
        out.append(
            Finding("LG208", some.file if some else "", "no lora_A/lora_B tensor in the file: the adapter does nothing")
        )
    targets = config.target_modules
    listed = [] if isinstance(targets, str) or targets is None else list(targets)
    checkable = targets is not None and targets != ALL_LINEAR
    for module, f in layout.factors.items():
        ref = f.a or f.b or f.bias or f.magnitude
        selected = spec_matches(module, targets) or config.wraps_parameters(module)
        if ref is not None and checkable and not selected and ref.name not in layout.flagged:
            out.append(_unselected(ref, module, "target_modules", listed, "LG202"))
        if f.bias is not None and not config.lora_bias:
            out.append(Finding("LG203", f.bias.file, "a lora_B bias, but the config has lora_bias=false", f.bias.name))
    saved_entries = list(config.modules_to_save or [])
    saved_modules: set[str] = set()
    for ref in layout.others:
        if ref.name in layout.flagged:
            continue
        saved = _saved_module(ref.name, layout, config)
        if saved is None:
            out.append(_unselected(ref, strip_prefix(ref.name), "modules_to_save", saved_entries, "LG203"))
        elif saved:
            saved_modules.add(saved)
    for entry in saved_entries:
        if not any(spec_matches(m, [entry]) for m in saved_modules):
            out.append(
                Finding(
                    "LG207",
                    ref_file(source),
                    f"modules_to_save entry '{entry}' has no saved tensor: the trained "
                    "copy of that module is missing, so loading restores the untrained one",
                )
            )
    dotted_targets = [e for e in listed if len(split(e)) > 1]
    for what, names, entries in (
        ("target_modules", set(layout.factors), dotted_targets),
        ("modules_to_save", saved_modules, saved_entries),
    ):
        for entry, hits in ambiguous_entries(sorted(names), entries).items():
            out.append(
                Finding(
                    "LG204",
                    ref_file(source),
                    f"{what} entry '{entry}' selects modules of more than one family "
                    f"({', '.join(hits[:4])}); write the full module path to select just one",
                )
            )
    return out


def _saved_module(key: str, layout: KeyLayout, config: LoraConfig) -> str | None:
    """The modules_to_save module a non-factor key belongs to.

    "" for an allowed bias, None if the config explains nothing.
    """
    if not key.startswith(PEFT_PREFIX):
        return None
    segs = split(strip_prefix(key))
    if segs[-2:] == ["base_layer", "bias"] and ".".join(segs[:-2]) in layout.factors:
        return "" if config.bias in ("all", "lora_only") else None
    if segs[-2:] == split(TOKENS) and len(segs) > 2:  # trainable tokens' rows (a list: the input embedding's)
        rows = config.trainable_token_indices
        return "" if isinstance(rows, list) or (rows and spec_matches(".".join(segs[:-2]), list(rows))) else None
    for cut in range(len(segs) - 1, 0, -1):
        module = ".".join(segs[:cut])
        if spec_matches(module, config.modules_to_save):
            return module
    return "" if config.bias == "all" and segs[-1] == "bias" else None


def _unselected(ref: TensorRef, name: str, what: str, entries: list[str], rule: str) -> Finding:
    """LG205 if only a bare endswith would select `name` (or one of its parent modules), else `rule`."""
    segs = split(name)
    candidates = [".".join(segs[:cut]) for cut in range(len(segs), 0, -1)]
    for entry, caught in false_suffix_matches(candidates, entries).items():
        return Finding(
            "LG205",
            ref.file,
            f"'{caught[0]}' is not selected by {what} entry '{entry}' at a dot boundary; only "
            "a bare endswith match catches it (peft's old suffix bug): this module was saved by mistake",
            ref.name,
        )
    if rule == "LG202":
        return Finding(
            rule,
            ref.file,
            f"module '{name}' carries LoRA factors but target_modules={entries or None!r} does not "
            "select it; the config and weights do not belong together",
            ref.name,
        )
    return Finding(
        rule,
        ref.file,
        f"'{name}' is not a LoRA factor and modules_to_save={entries or None!r} does not select "
        "it; peft will not load it",
        ref.name,
    )


def ref_file(source: TensorSource) -> str:
    """The file a checkpoint-wide finding is reported on (its first tensor's file)."""
    return next(iter(source.refs.values())).file if source.refs else ""


def _values(source: TensorSource, layout: KeyLayout, on_read: Callable[[int], None]) -> list[Finding]:
    out: list[Finding] = []
    b_refs = {f.b.name for f in layout.factors.values() if f.b is not None and f.a is not None}
    zero_b: list[TensorRef] = []
    for ref in source.refs.values():
        if ref.numel == 0 or not bit_checkable(ref.dtype):
            continue
        non_finite, all_zero = source.value_flags(ref)
        on_read(ref.nbytes)
        if non_finite:
            out.append(
                Finding(
                    "LG306",
                    ref.file,
                    f"{ref.dtype} tensor holds NaN or Inf: training diverged or the file is damaged",
                    ref.name,
                )
            )
        if all_zero and ref.name in b_refs:
            zero_b.append(ref)
    if zero_b and len(zero_b) == len(b_refs):
        out.append(
            Finding(
                "LG305",
                zero_b[0].file,
                f"all {len(zero_b)} lora_B tensors are zero, so the adapter changes "
                "nothing: it was saved before training, or its weights were never loaded",
            )
        )
    else:
        out += [Finding("LG304", r.file, "lora_B is all zero: this layer has no effect", r.name) for r in zero_b]
    return out
