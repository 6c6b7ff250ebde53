"""peft: trainable tokens on a tied output head drop the head's bias from the unmerged forward.

When the model declares its head tied to the input embedding (`tie_word_embeddings` in its config and
`_tied_weights_keys`, as transformers models do; BERT's masked-LM decoder has a bias), peft wraps the head in a
`TrainableTokensLayer` that follows the embedding's rows. Its unmerged forward computes `F.linear(x, W)` without the
head's bias, so a freshly wrapped model, whose rows are still the original ones, already differs from the base model.
Disabling or merging the adapter brings the bias back (huggingface/peft#3649). Computed in float64.
"""

from dataclasses import dataclass

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


@dataclass
class Config:
    tie_word_embeddings: bool = True


class TiedLM(nn.Module):
    _tied_weights_keys = ["lm_head.weight"]

    def __init__(self) -> None:
        super().__init__()
        self.config = Config()
        self.wte = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 20)  # with a bias, as BERT's decoder
        self.lm_head.weight = self.wte.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.wte

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.proj(self.wte(ids))))


torch.manual_seed(0)
base = TiedLM().double().eval()
ids = torch.tensor([[1, 4, 7, 2, 3]])
with torch.no_grad():
    expected = base(ids)
config = LoraConfig(target_modules=["proj"], trainable_token_indices=[1, 4, 7])  # B = 0, rows as they are: a no-op
model = get_peft_model(base, config).eval()
assert type(model.base_model.model.lm_head).__name__ == "TrainableTokensWrapper", "peft did not tie the head"
with torch.no_grad():
    got = model(ids)
diff = (got - expected).abs().max().item()
assert diff < 1e-9, (
    f"a freshly wrapped model differs from the base model by {diff:.3g} (float64): the tied head's bias is dropped"
)
