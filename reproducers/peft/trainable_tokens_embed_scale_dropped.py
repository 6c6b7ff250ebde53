"""peft 0.15-0.17: trainable tokens on a scaled embedding (Gemma's `embed_scale`) drop the scale.

The token layer computes `F.embedding` with the rows replaced but never multiplies by the embedding's `embed_scale`,
so a freshly wrapped model (the rows are the embedding's own, nothing trained) already differs from the base
model, and a merge (which the base forward scales again) changes the output. Fixed in 0.18.0.
"""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class ScaledEmbedding(nn.Embedding):
    def __init__(self, num: int, dim: int, scale: float) -> None:
        super().__init__(num, dim)
        self.register_buffer("embed_scale", torch.tensor(scale), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.embed_scale.to(self.weight.dtype)


class LM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = ScaledEmbedding(20, 8, 8**0.5)
        self.proj = nn.Linear(8, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.proj(self.wte(ids))


torch.manual_seed(0)
base = LM()
ids = torch.tensor([[1, 2, 4, 5]])
with torch.no_grad():
    want = base(ids)
    model = get_peft_model(base, LoraConfig(target_modules=["proj"], trainable_token_indices={"wte": [1, 4]}))
    got = model(ids)  # LoRA's B starts at zero and the token rows at their own values: nothing changed yet
diff = (got - want).abs().max().item()
assert diff < 1e-6, f"freshly wrapped model differs from the base by {diff:.3g}: the token layer dropped embed_scale"
