"""peft: once one adapter has trainable tokens, an adapter without them can no longer be saved.

`save_pretrained` asks every `TrainableTokensWrapper` for the saved adapter's rows, and the wrapper looks up
`token_adapter.trainable_tokens_delta.<adapter>` without checking that this adapter has any: KeyError, for
`selected_adapters=[...]` and for a plain `save_pretrained` of all adapters alike.
"""

import tempfile

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class LM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.wte(ids))


torch.manual_seed(0)
model = get_peft_model(LM(), LoraConfig(target_modules=["proj"], trainable_token_indices={"wte": [1, 2]}))
model.add_adapter("second", LoraConfig(target_modules=["proj"]))  # plain LoRA, no trainable tokens
error = None
with tempfile.TemporaryDirectory() as d:
    try:
        model.save_pretrained(d, selected_adapters=["second"])
    except KeyError as err:
        error = err
assert error is None, f"saving adapter 'second' (no trainable tokens) failed: KeyError {error}"
