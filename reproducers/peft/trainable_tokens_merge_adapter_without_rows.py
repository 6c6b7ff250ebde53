"""peft: merging two adapters at once fails when only one of them has trainable tokens.

Adapter 'default' is plain LoRA; adapter 'other' is LoRA plus `trainable_token_indices` on the embedding. Both may be
active together (their forward works), but `merge_adapter(["default", "other"])` raises `KeyError: 'default'`:
`TrainableTokensLayer.merge` passes every requested name to `_check_overlapping_tokens`, which looks up
`token_indices[name]` for an adapter that has no rows on this embedding.
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
model = get_peft_model(LM(), LoraConfig(target_modules=["fc"]))
model.add_adapter("other", LoraConfig(target_modules=["fc"], trainable_token_indices=[0, 3]))
model.base_model.set_adapter(["default", "other"])
ids = torch.tensor([[0, 1, 3]])
with torch.no_grad():
    model(ids)  # both active: the forward works
    try:
        model.base_model.merge_adapter(["default", "other"])
        error = None
    except KeyError as err:
        error = err
assert error is None, f"merge_adapter(['default', 'other']) raised KeyError {error}: 'default' has no token rows"
