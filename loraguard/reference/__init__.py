"""loraguard's reference LoRA implementation: the oracle every backend is compared against."""

from loraguard.reference.io import AdapterLoadError
from loraguard.reference.kinds import LoraConv, LoraEmbedding, LoraLinear
from loraguard.reference.layers import LoraLayer
from loraguard.reference.model import LoraModel
from loraguard.reference.saved import ModulesToSave
from loraguard.reference.selection import AlreadyAdaptedError, all_linear_targets, carries_adapters
from loraguard.reference.tokens import TrainableTokens

__all__ = [
    "AdapterLoadError",
    "AlreadyAdaptedError",
    "LoraConv",
    "LoraEmbedding",
    "LoraLayer",
    "LoraLinear",
    "LoraModel",
    "ModulesToSave",
    "TrainableTokens",
    "all_linear_targets",
    "carries_adapters",
]
