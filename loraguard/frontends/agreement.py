"""Reference-vs-peft agreement over the zoo: the one implementation behind `loraguard demo` and tests/agreement.

For each zoo model, dtype and config variant, the reference `LoraModel` and peft's `get_peft_model` are built on
the same base weights and given the same adapter weights; then their outputs are compared unmerged, disabled
and merged against the tolerance table, their saved key sets are compared, and each loads the other's save.
A difference caused by peft's bare-suffix `modules_to_save` matching (huggingface/peft#1917) is labelled as such.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraguard.core.config import WEIGHTS_NAME, LoraConfig
from loraguard.core.keys import split, strip_prefix
from loraguard.core.matching import false_suffix_matches

if TYPE_CHECKING:
    import torch
    from torch import nn

    from loraguard.backends.base import Backend
    from loraguard.harness.zoo import ZooModel

#: peft's issue for `modules_to_save` matched with a bare ``key.endswith(entry)``
#: (peft/utils/other.py `_set_trainable`).
PEFT_SUFFIX_BUG = "huggingface/peft#1917"
#: peft's issue for a merge into a weight tied to another module (input and output embeddings), which changes both.
PEFT_TIED_BUG = "huggingface/peft#2018"
KNOWN_PEFT_BUGS = {
    PEFT_SUFFIX_BUG: "peft's _set_trainable matches modules_to_save with a bare key.endswith(entry), so an entry "
    "such as 'model.layers.1.fc' also wraps, trains and saves 'img_model.layers.1.fc'",
    PEFT_TIED_BUG: "peft merges a LoRA delta into a weight tied to another module in place, so merging the input "
    "embedding's adapter also changes the tied output head (reproducers/peft/tied_embedding_merge.py)",
}
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class Variant:
    """One LoRA configuration shape, applied to each zoo model's own targets."""

    name: str
    r: int
    lora_alpha: float
    use_rslora: bool = False
    patterned: bool = False
    bias: str = "none"
    lora_bias: bool = False
    lora_dropout: float = 0.0
    use_dora: bool = False
    tokens: bool = False  # trainable tokens, with the targets and rows of harness.scenarios.TOKEN_MODELS

    def config(self, zoo_model: ZooModel, base: nn.Module) -> LoraConfig:
        """The config for `zoo_model`; `patterned` gives its first target rank 2 and its last target alpha 24."""
        from loraguard.harness.scenarios import TOKEN_MODELS

        targets = zoo_model.target_modules
        rows = None
        if self.tokens:
            targets, rows, _ = TOKEN_MODELS[zoo_model.name]
        patterned = self.patterned and isinstance(targets, list)
        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            use_rslora=self.use_rslora,
            bias=self.bias,
            lora_bias=self.lora_bias,
            lora_dropout=self.lora_dropout,
            use_dora=self.use_dora,
            target_modules=copy.copy(targets),
            modules_to_save=list(zoo_model.modules_to_save) or None,
            rank_pattern={targets[0]: 2} if patterned else {},
            alpha_pattern={targets[-1]: 24} if patterned else {},
            fan_in_fan_out=_has_transposed_linear(base),
            init_lora_weights=False,
            trainable_token_indices=rows,
        )


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("plain", r=4, lora_alpha=32),
        Variant("rslora+patterns", r=4, lora_alpha=16, use_rslora=True, patterned=True),
    ]
}
#: DoRA, compared by tests/agreement (not part of the demo's table).
DORA = Variant("dora", r=4, lora_alpha=32, use_dora=True)
#: Trainable tokens beside LoRA, compared by tests/agreement (not part of the demo's table).
TOKENS = Variant("tokens", r=4, lora_alpha=32, tokens=True)


@dataclass
class Problem:
    """One disagreement; `cause` names a documented peft bug that fully explains it, or is None."""

    text: str
    cause: str | None = None


@dataclass
class AgreementRow:
    """The comparison of reference and peft on one zoo model, dtype and variant (differences are max-abs)."""

    model: str
    dtype: str
    variant: str
    effect: float = float("nan")
    bound: float = float("nan")
    unmerged: float = float("nan")
    disabled: float = float("nan")
    merged: float = float("nan")
    keys_equal: bool = False
    weights_file: str = "not compared"
    peft_loads_reference: bool = False
    reference_loads_peft: bool = False
    problems: list[Problem] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.problems

    @property
    def explained(self) -> bool:
        """True when there are problems and every one is caused by a documented peft bug."""
        return bool(self.problems) and all(p.cause for p in self.problems)

    @property
    def verdict(self) -> str:
        if self.agrees:
            return "agree"
        if self.explained:
            return "peft bug " + ", ".join(sorted({p.cause for p in self.problems if p.cause}))
        return "DISAGREE"


def suffix_traps(zoo_model: ZooModel, base: nn.Module | None = None) -> list[str]:
    """Modules a bare ``endswith`` catches for this model's `modules_to_save` but the dot-boundary rule does not."""
    base = base if base is not None else zoo_model.make()
    names = [n for n, _ in base.named_modules() if n]
    return sorted({n for hits in false_suffix_matches(names, zoo_model.modules_to_save).values() for n in hits})


def compare(zoo_model: ZooModel, dtype_name: str, variant: Variant, workdir: str | Path | None = None) -> AgreementRow:
    """Build reference and peft on the same weights and compare them; every failed step becomes a Problem."""
    import torch

    dtype = getattr(torch, dtype_name)
    row = AgreementRow(zoo_model.name, dtype_name, variant.name)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        try:
            with torch.no_grad():
                _compare_into(row, zoo_model, dtype, variant, Path(tmp))
        except Exception as err:  # a crash on either side is a finding for this row, not the end of the report
            row.problems.append(Problem(f"comparison stopped: {type(err).__name__}: {_first_line(err)}"))
    return row


def agreement_rows(
    models: Iterable[str] | None = None,
    dtypes: Iterable[str] = DTYPES,
    variants: Iterable[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[AgreementRow]:
    """One row per available zoo model x dtype x variant (unknown names are an error); `progress(label)` is
    called as each row starts."""
    from loraguard.harness.zoo import available

    picked = [VARIANTS[v] for v in (variants or VARIANTS)]
    rows = []
    # task models (a task_type) are left out unless named: agreement builds plain LoRA configs, no task heads
    for m in available(list(models) if models else None):
        if m.task_type is not None and not models:
            continue
        for d in dtypes:
            for v in picked:
                if progress:
                    progress(f"{m.name} {d} {v.name}")
                rows.append(compare(m, d, v))
    return rows


def _compare_into(row: AgreementRow, zoo_model: ZooModel, dtype: torch.dtype, variant: Variant, tmp: Path) -> None:
    import torch

    from loraguard.backends.peft import PeftBackend
    from loraguard.core.tolerance import EFFECT_MARGIN, bound, max_diff
    from loraguard.harness.zoo import run
    from loraguard.reference import LoraModel

    base = zoo_model.make(seed=0, dtype=dtype)
    inputs = zoo_model.example(seed=1)
    config = variant.config(zoo_model, base)
    traps = suffix_traps(zoo_model, base)
    cause_if = _attribution(traps)

    base_out = run(base, inputs, dtype)
    ref = LoraModel(copy.deepcopy(base), config).eval()
    _train_magnitudes(ref, seed=3)
    _train_tokens(ref, seed=4)
    lora_only = run(ref, inputs, dtype)
    perturbed = _perturb_saved_copies(ref, seed=2)
    peft = PeftBackend()  # peft is driven through its backend: one translation of the config, one API
    theirs = peft.wrap(copy.deepcopy(base), config)
    theirs.eval()
    ours_state = ref.model.state_dict()
    their_state = {strip_prefix(k): v for k, v in theirs.state_dict().items()}
    only_ours, only_theirs = sorted(set(ours_state) - set(their_state)), sorted(set(their_state) - set(ours_state))
    if only_ours or only_theirs:
        row.problems.append(
            Problem(
                f"model structure differs: only reference {_short(only_ours)}, only peft {_short(only_theirs)}",
                cause_if(only_ours + only_theirs),
            )
        )
    for key in set(ours_state) & set(their_state):
        their_state[key].copy_(ours_state[key])

    want = run(ref, inputs, dtype)
    row.bound = bound(want, dtype)
    effects = {"LoRA layers": max_diff(lora_only, base_out)}
    if perturbed:
        effects["modules_to_save copies"] = max_diff(want, lora_only)
    row.effect = min(effects.values())
    for what, effect in effects.items():
        if effect <= EFFECT_MARGIN * row.bound:
            row.problems.append(
                Problem(
                    f"effect of the {what} {effect:.3g} is not {EFFECT_MARGIN:g}x the bound "
                    f"{row.bound:.3g}, so agreement would prove nothing"
                )
            )
    their_out = run(theirs, inputs, dtype)
    row.unmerged = _check(row, "unmerged", max_diff(their_out, want))

    with ref.disable_adapter(), peft.disabled(theirs):
        ref_disabled, their_disabled = run(ref, inputs, dtype), run(theirs, inputs, dtype)
    row.disabled = _check(row, "disabled", max_diff(their_disabled, ref_disabled))
    if not torch.equal(ref_disabled, base_out):
        row.problems.append(Problem("reference with adapters disabled differs from the base model"))

    _compare_saves(row, peft, base, inputs, dtype, ref, theirs, want, their_out, tmp, cause_if)

    tied = tied_cause(ref)  # before the merge, which unties the reference's weight
    ref.merge()
    peft.merge(theirs)
    ref_merged = run(ref, inputs, dtype)
    row.merged = _check(row, "merged", max_diff(run(theirs, inputs, dtype), ref_merged), tied)
    if max_diff(ref_merged, want) > row.bound:
        row.problems.append(
            Problem(
                f"reference merged output is {max_diff(ref_merged, want):.3g} from its unmerged "
                f"output (bound {row.bound:.3g}): the merge is skipped or applied twice"
            )
        )


def _compare_saves(
    row: AgreementRow,
    peft: Backend,
    base: nn.Module,
    inputs: tuple,
    dtype: torch.dtype,
    ref: Any,
    theirs: Any,
    want: torch.Tensor,
    their_out: torch.Tensor,
    tmp: Path,
    cause_if: Callable[[list[str]], str | None],
) -> None:
    """Saved key sets equal both ways; each implementation loads the other's save and gives identical outputs."""
    import torch
    from safetensors.torch import load_file

    from loraguard.core.tolerance import max_diff
    from loraguard.harness.zoo import run
    from loraguard.reference import LoraModel

    ours_dir, theirs_dir = tmp / "reference", tmp / "peft"
    ref.save_pretrained(ours_dir)
    peft.save(theirs, theirs_dir)
    ours_saved, their_saved = load_file(ours_dir / WEIGHTS_NAME), load_file(theirs_dir / WEIGHTS_NAME)
    ours_keys, their_keys = set(ours_saved), set(their_saved)
    row.keys_equal = ours_keys == their_keys
    key_cause = None
    if not row.keys_equal:
        diff = sorted(ours_keys ^ their_keys)
        key_cause = cause_if([strip_prefix(k) for k in diff])
        row.problems.append(
            Problem(
                f"saved keys differ: only reference {_short(sorted(ours_keys - their_keys))}, "
                f"only peft {_short(sorted(their_keys - ours_keys))}",
                key_cause,
            )
        )
        row.weights_file = "keys differ"
    else:
        row.weights_file = _compare_files(ours_dir / WEIGHTS_NAME, theirs_dir / WEIGHTS_NAME, ours_saved, their_saved)
        if row.weights_file == DIFFERENT_VALUES:
            row.problems.append(Problem("saved tensors differ in value although both models hold the same weights"))

    def load(what: str, build: Callable[[], nn.Module], expected: torch.Tensor) -> bool:
        try:
            got = run(build().eval(), inputs, dtype)
        except Exception as err:  # any failure to load is a finding, reported with its message
            message = _first_line(err).replace(str(tmp), "<save dir>")
            row.problems.append(Problem(f"{what} fails: {type(err).__name__}: {message}", key_cause))
            return False
        if not torch.equal(got, expected):
            row.problems.append(Problem(f"{what}: output differs by {max_diff(got, expected):.3g} from the saver's"))
            return False
        return True

    row.peft_loads_reference = load(
        "peft loading the reference save", lambda: peft.load(copy.deepcopy(base), ours_dir), their_out
    )
    row.reference_loads_peft = load(
        "reference loading the peft save", lambda: LoraModel.from_pretrained(copy.deepcopy(base), theirs_dir), want
    )


IDENTICAL = "identical bytes"
UPCAST = "peft stores float32"
DIFFERENT_VALUES = "values DIFFER"


def _compare_files(
    ours: Path, theirs: Path, ours_saved: dict[str, torch.Tensor], their_saved: dict[str, torch.Tensor]
) -> str:
    """Byte-identical files, or the same values where peft keeps half-precision factors in float32
    (its `autocast_adapter_dtype=True` default), or different values."""
    import torch

    if ours.read_bytes() == theirs.read_bytes():
        return IDENTICAL
    same_values = all(torch.equal(ours_saved[k].float(), their_saved[k].float()) for k in ours_saved)
    upcast_only = all(
        a.dtype == b.dtype or b.dtype == torch.float32 for a, b in ((ours_saved[k], their_saved[k]) for k in ours_saved)
    )
    return UPCAST if same_values and upcast_only else DIFFERENT_VALUES


def _check(row: AgreementRow, state: str, diff: float, cause: str | None = None) -> float:
    if not diff <= row.bound:
        row.problems.append(Problem(f"{state} outputs differ by {diff:.3g} > bound {row.bound:.3g}", cause))
    return diff


def tied_cause(ref: Any) -> str | None:
    """peft's tied-weight merge bug, if some LoRA target of the reference model shares its weight with another
    module (tied input and output embeddings); else None."""
    from collections import Counter

    uses = Counter(id(p) for _, p in ref.model.named_parameters(remove_duplicate=False))
    tied = [p for p, layer in ref.lora_layers().items() if uses[id(layer.base_weight())] > 1]
    return PEFT_TIED_BUG if tied else None


def _attribution(traps: list[str]) -> Callable[[list[str]], str | None]:
    """A function naming peft's suffix bug as the cause when every differing key lies under a trapped module."""
    trap_segs = [split(t) for t in traps]

    def cause(keys: list[str]) -> str | None:
        under = all(any(split(k)[: len(t)] == t for t in trap_segs) for k in keys)
        return PEFT_SUFFIX_BUG if keys and trap_segs and under else None

    return cause


def _perturb_saved_copies(ref: Any, seed: int) -> bool:
    """Give each modules_to_save copy its own weights (noise 1.5x each tensor's mean magnitude), so using the
    copy or the original shows in the output; False if there are no copies."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    params = [p for w in ref.saved_modules().values() for m in w.modules_to_save.values() for p in m.parameters()]
    for p in params:
        p.add_(1.5 * p.abs().mean() * torch.randn(p.shape, generator=gen).to(p.dtype))
    return bool(params)


def _train_magnitudes(ref: Any, seed: int) -> None:
    """Move each DoRA magnitude off its initial value (the norm, where DoRA's rescaling is 1 and shows nothing)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for layer in ref.lora_layers().values():
        for store in layer.lora_magnitude_vector.values():
            store.weight.mul_((0.6 + 0.8 * torch.rand(store.weight.shape, generator=gen)).to(store.weight.dtype))


def _train_tokens(ref: Any, seed: int) -> None:
    """Move each trainable token row off its initial value (the row itself, where it changes nothing), by noise
    1.5x the rows' mean magnitude."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    for layer in ref.token_layers().values():
        for values in layer.token_adapter.trainable_tokens_delta.values() if layer.leader is None else ():
            values.add_((1.5 * values.abs().mean() * torch.randn(values.shape, generator=gen)).to(values.dtype))


def _has_transposed_linear(model: nn.Module) -> bool:
    from loraguard.reference.layers import is_conv1d_transposed

    return any(is_conv1d_transposed(m) for m in model.modules())


def _short(items: list[str], n: int = 3) -> str:
    return "[" + ", ".join(items[:n]) + (f", ... {len(items) - n} more" if len(items) > n else "") + "]"


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"
