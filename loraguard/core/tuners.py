"""peft's other tuners that merge (LoHa, LoKr, IA3, OFT, AdaLoRA...): which one, where, and its own fields.

loraguard's reference implements LoRA only, so a tuner scenario runs the invariants that need no oracle
(merge equals forward, unmerge restores, round-trip, isolation, dtype, naming). The fields are peft's names;
the peft backend translates a TunerConfig into the tuner's own config class, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: The tuners loraguard can describe, each with the capability a backend declares to run it.
KINDS = {
    "loha": "LoHa: a Hadamard product of two low-rank products",
    "lokr": "LoKr: a Kronecker product of two factors",
    "ia3": "IA3: learned vectors scaling activations (feedforward modules scale inputs)",
    "oft": "OFT: a block-diagonal orthogonal rotation of the weight",
    "adalora": "AdaLoRA: LoRA in SVD form (P, Lambda, Q) with an adaptive rank",
}


@dataclass
class TunerConfig:
    """One non-LoRA adapter: its kind, targets, modules_to_save, and its kind-specific fields under peft's names."""

    kind: str
    target_modules: list[str] | str
    modules_to_save: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"TunerConfig: field 'kind': unknown tuner {self.kind!r}; known: {sorted(KINDS)}")
        clash = sorted({"target_modules", "modules_to_save"} & set(self.options))
        if clash:
            raise ValueError(f"TunerConfig: field 'options': {clash} are fields of TunerConfig itself")
