"""peft: merging trainable tokens on an embedding whose weight is shared with the output head changes the head.

With `trainable_token_indices`, the unmerged model computes the input embedding with the trained rows but the
head with the original ones, since peft ties the head to the token adapter only when the model's config says
`tie_word_embeddings` (a plain torch model has no such config; cf. huggingface/peft#2399). `merge_adapter()` then
writes the rows into the shared tensor in place, so the merged head computes with them too and the merged model's
output differs from the unmerged one. Computed in float64: the difference is not rounding.
"""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 20)
        self.lm_head.weight = self.wte.weight  # tied input and output embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.proj(self.wte(ids))))


torch.manual_seed(0)
config = LoraConfig(target_modules=["proj"], trainable_token_indices={"wte": [1, 4, 7]})
model = get_peft_model(TiedLM().double(), config).eval()
with torch.no_grad():  # a training step's worth of change to the trainable rows
    model.base_model.model.wte.token_adapter.trainable_tokens_delta["default"].add_(0.5)
ids = torch.tensor([[1, 4, 7, 2, 3]])
with torch.no_grad():
    unmerged = model(ids)
    model.merge_adapter()
    merged = model(ids)
diff = (merged - unmerged).abs().max().item()
assert diff < 1e-9, (
    f"merged output differs from the unmerged one by {diff:.3g} (float64): the merge also changed the tied lm_head"
)
