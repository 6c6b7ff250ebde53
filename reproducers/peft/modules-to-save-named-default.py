"""peft 0.21.2: a module named like the adapter ('default') cannot be listed in modules_to_save.

modules_to_save=['default'] names one module, the top-level Linear called 'default'. peft matches the entry by
name suffix over every module, LoRA's own included, so it also matches 'fc.lora_A.default' (the LoRA factor of
the targeted 'fc', stored under the adapter's name) and get_peft_model refuses with a ValueError. Found by
loraguard (invariants modules-to-save and continue-training, drawn). Imports only torch and peft.
"""

import peft
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.default = nn.Linear(6, 6)

    def forward(self, x):
        return self.default(torch.tanh(self.fc(x)))


config = peft.LoraConfig(r=1, lora_alpha=2, target_modules=["fc"], modules_to_save=["default"])
try:
    model = peft.get_peft_model(Net(), config)
except ValueError as err:
    raise AssertionError(
        "modules_to_save=['default'] names only the module 'default', yet get_peft_model refuses it because the "
        f"entry also matches LoRA's own 'fc.lora_A.default': {err}"
    ) from None
copied = sorted(n for n, m in model.base_model.model.named_modules() if hasattr(m, "modules_to_save"))
assert copied == ["default"], f"modules_to_save=['default'] should copy exactly ['default']; peft copied {copied}"
print("no failure: this peft release accepts a module named like the adapter")
