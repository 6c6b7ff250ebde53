"""What an agreement run compares and reports: config variants, result rows, problems and the peft bugs behind them."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loraguard.core.config import LoraConfig

if TYPE_CHECKING:
    from torch import nn

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
    tokens: bool = False  # trainable tokens, with the targets and rows of harness.zoo_scenarios.TOKEN_MODELS

    def config(self, zoo_model: ZooModel, base: nn.Module) -> LoraConfig:
        """The config for `zoo_model`; `patterned` gives its first target rank 2 and its last target alpha 24."""
        from loraguard.harness.zoo_scenarios import TOKEN_MODELS

        targets = zoo_model.target_modules
        rows = None
        if self.tokens:
            targets, rows, _ = TOKEN_MODELS[zoo_model.name]
        patterned = self.patterned and isinstance(targets, list)
        # patterns reach parameter targets too: peft keys them by the parameter's name, as the reference does
        params = list(zip(zoo_model.target_parameters or [], (3, 12)))
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
            rank_pattern={targets[0]: 2, **dict(params[:1])} if patterned else {},
            alpha_pattern={targets[-1]: 24, **dict(params[1:2])} if patterned else {},
            fan_in_fan_out=_has_transposed_linear(base),
            init_lora_weights=False,
            trainable_token_indices=rows,
            target_parameters=copy.copy(zoo_model.target_parameters),
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


def _has_transposed_linear(model: nn.Module) -> bool:
    from loraguard.reference.layers import is_conv1d_transposed

    return any(is_conv1d_transposed(m) for m in model.modules())


def short(items: list[str], n: int = 3) -> str:
    """The first `n` items and how many more, for a problem's text."""
    return "[" + ", ".join(items[:n]) + (f", ... {len(items) - n} more" if len(items) > n else "") + "]"


def first_line(err: BaseException) -> str:
    """The first line of an error's message, for a problem's text."""
    text = str(err).strip()
    return text.splitlines()[0] if text else "(no message)"
