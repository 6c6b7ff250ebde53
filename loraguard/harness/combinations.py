"""The weighted combinations a scenario is checked with: every combination_type peft knows, with real weights
(negative, zero, above one), pruning densities and SVD ranks derived from the scenario's seed, so each drawn
example meets another part of the domain and a failure replays from the scenario alone."""

from __future__ import annotations

from dataclasses import dataclass

from loraguard.core.combine_math import COMBINATION_TYPES, EQUAL_RANKS, SignMethod

#: Weights users pass: subtraction (negative), a dropped adapter (zero), amplification (above one), fractions.
WEIGHTS = (-1.5, -0.4, 0.0, 0.6, 1.0, 2.5)
DENSITIES = (0.5, 1.0)


@dataclass(frozen=True)
class Combination:
    """One call of ``add_weighted_adapter``: the type, one weight per adapter, and the type's options."""

    combination_type: str
    weights: tuple[float, float]
    density: float = 1.0
    majority_sign_method: SignMethod = "total"
    svd_rank: int | None = None

    @property
    def equal_ranks(self) -> bool:
        """The type merges the factors themselves, so it combines adapters of one rank."""
        return self.combination_type in EQUAL_RANKS


def combinations(seed: int) -> list[Combination]:
    """One combination per type; every list has a negative weight, and no combination has only zero weights."""
    out = []
    for i, kind in enumerate(COMBINATION_TYPES):
        first = WEIGHTS[(seed + i) % len(WEIGHTS)]
        second = WEIGHTS[(seed * 5 + 3 * i + 1) % len(WEIGHTS)]
        if i == seed % len(COMBINATION_TYPES) or (first >= 0 and second >= 0 and i % 2 == 0):
            second = -abs(second) or -0.4  # at least half the types subtract an adapter
        if first == 0 and second == 0:
            first = 1.0
        out.append(
            Combination(
                kind,
                (first, second),
                density=DENSITIES[(seed + i) % 2] if kind not in ("linear", "svd", "cat") else 1.0,
                majority_sign_method="total" if (seed + i) % 3 else "frequency",
                svd_rank=1 if kind.endswith("svd") and (seed + i) % 4 == 0 else None,
            )
        )
    return out
