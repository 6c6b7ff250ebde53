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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraguard.core.keys import split, strip_prefix
from loraguard.core.matching import false_suffix_matches
from loraguard.frontends.agreement_rows import (
    DORA,
    DTYPES,
    KNOWN_PEFT_BUGS,
    PEFT_SUFFIX_BUG,
    PEFT_TIED_BUG,
    TOKENS,
    VARIANTS,
    AgreementRow,
    Problem,
    Variant,
    first_line,
    short,
)
from loraguard.frontends.agreement_saves import compare_saves

if TYPE_CHECKING:
    import torch
    from torch import nn

    from loraguard.harness.zoo import ZooModel

#: The rows and variants are defined in `agreement_rows`; they are the public API of the agreement here too.
__all__ = [
    "DORA",
    "DTYPES",
    "KNOWN_PEFT_BUGS",
    "PEFT_SUFFIX_BUG",
    "PEFT_TIED_BUG",
    "TOKENS",
    "VARIANTS",
    "AgreementRow",
    "Problem",
    "Variant",
    "agreement_rows",
    "compare",
    "suffix_traps",
    "tied_cause",
]


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
            row.problems.append(Problem(f"comparison stopped: {type(err).__name__}: {first_line(err)}"))
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
                f"model structure differs: only reference {short(only_ours)}, only peft {short(only_theirs)}",
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

    compare_saves(row, peft, base, inputs, dtype, ref, theirs, want, their_out, tmp, cause_if)

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
