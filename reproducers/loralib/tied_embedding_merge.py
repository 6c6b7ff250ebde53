"""loralib: eval() merges an Embedding's LoRA delta into its weight in place, so a tied output head changes too.

In train mode the adapter applies to the input embedding only; `eval()` adds s * B @ A into the shared weight, and the
tied `lm_head` then computes with W + dW as well: the merged (eval) output differs from the unmerged (train) one.
"""

import loralib as lora
import torch
from torch import nn


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = lora.Embedding(20, 8, r=4, lora_alpha=16)
        self.proj = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 20)
        self.lm_head.weight = self.wte.weight  # tied input and output embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.proj(self.wte(ids))))


torch.manual_seed(0)
model = TiedLM()
nn.init.normal_(model.wte.lora_A)
nn.init.normal_(model.wte.lora_B)  # a trained adapter: B no longer zero
ids = torch.randint(0, 20, (2, 5))
with torch.no_grad():
    unmerged = model.train()(ids)  # no dropout in this model: train mode only keeps the delta unmerged
    merged = model.eval()(ids)
diff = (merged - unmerged).abs().max().item()
assert diff < 1e-4, (
    f"merged (eval) output differs from the unmerged one by {diff:.3g}: the merge changed the tied lm_head"
)
