"""peft 0.21.2: modules_to_save=['base_layer'] also copies LoRA's own wrapped layer, and a bf16 model then crashes.

The entry names one module, the model's own Linear called 'base_layer'. peft matches it by name suffix over every
module, LoRA's own included, so it also wraps 'fc.base_layer' (the layer that the LoRA layer of the targeted 'fc'
wraps) in a modules_to_save copy; that copy is cast to float32 with the adapter factors, and the forward of a
bfloat16 model fails with "mat1 and mat2 must have the same dtype". The suffix match of
modules-to-save-named-default.py, met through peft's reserved name. Found by loraguard (invariant modules-to-save,
drawn, thorough profile). Imports only torch and peft.
"""

import peft
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.base_layer = nn.Linear(6, 6)

    def forward(self, x):
        return self.base_layer(torch.tanh(self.fc(x)))


config = peft.LoraConfig(r=1, target_modules=["fc"], modules_to_save=["base_layer"])
model = peft.get_peft_model(Net().to(torch.bfloat16), config)
copied = sorted(n for n, m in model.base_model.model.named_modules() if hasattr(m, "modules_to_save"))
try:
    model(torch.randn(2, 6, dtype=torch.bfloat16))
except RuntimeError as err:
    raise AssertionError(f"modules_to_save=['base_layer'] copied {copied}, and the bf16 forward fails: {err}") from None
assert copied == ["base_layer"], f"modules_to_save=['base_layer'] should copy only ['base_layer']; peft: {copied}"
print("no failure: this peft release copies only the model's own 'base_layer'")
