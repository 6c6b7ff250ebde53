"""peft: add_weighted_adapter with combination_type="svd" crashes on an nn.Conv1d LoRA layer.

The delta of a Conv1d adapter is 3-D (out, in, kernel); peft flattens it only for Conv2d, so torch.linalg.svd
treats it as a batch of matrices and `U @ torch.diag(S)` fails. The adapter is half-created when it raises.
Found by loraguard's weighted-combination invariant (convnet zoo model, drawn trees with Conv1d leaves).
"""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(6, 4, 3)

    def forward(self, x):
        return self.conv(x)


torch.manual_seed(0)
model = get_peft_model(Net(), LoraConfig(r=2, lora_alpha=4, target_modules=["conv"], init_lora_weights=False))
model.add_adapter("other", LoraConfig(r=2, lora_alpha=4, target_modules=["conv"], init_lora_weights=False))
try:
    model.add_weighted_adapter(["default", "other"], [1.0, 0.5], "combined", combination_type="svd")
    error = None
except RuntimeError as err:
    error = err
assert error is None, f"add_weighted_adapter(combination_type='svd') on nn.Conv1d raised: {error}"
