"""peft 0.21.2: merging a weighted combination of adapters, one of which has trainable tokens, raises KeyError.

Adapter 'default' is plain LoRA; adapter 'other' is LoRA plus `trainable_token_indices` on the embedding.
`add_weighted_adapter(["default", "other"], ..., "combined")` builds the LoRA combination but gives the embedding's
trainable-tokens layer no rows for "combined"; `merge_adapter(["combined"])` then reaches
`TrainableTokensLayer.merge`, which reads `token_indices["combined"]` and raises `KeyError: 'combined'`. The
two-adapter form of the same lookup is trainable_tokens_merge_adapter_without_rows.py. Found by loraguard
(invariant weighted-combination, drawn, thorough profile). Imports only torch and peft.
"""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class LM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(10, 6)
        self.fc = nn.Linear(6, 6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embed_tokens(ids))


torch.manual_seed(0)
model = get_peft_model(LM(), LoraConfig(target_modules=["fc"], init_lora_weights=False))
model.add_adapter("other", LoraConfig(target_modules=["fc"], trainable_token_indices=[0], init_lora_weights=False))
model.add_weighted_adapter(["default", "other"], [1.0, 1.0], "combined", combination_type="svd")
model.set_adapter("combined")
try:
    model.base_model.merge_adapter(["combined"])
except KeyError as err:
    said = f"merge_adapter of a weighted combination over trainable tokens raised KeyError {err}"
    raise AssertionError(said) from None
print("no failure: this peft release merges the combination")
