"""peft 0.21.2: a user module named 'lora_A' cannot be listed in modules_to_save.

modules_to_save=['lora_A'] names one module, the model's own Linear called 'lora_A'. peft matches the entry by
name suffix over every module, LoRA's own included, so it also matches 'fc.lora_A' (the ModuleDict holding the
LoRA factors of the targeted 'fc') and get_peft_model fails with a TypeError. The same suffix match as
modules-to-save-named-default.py, met through a different name. Found by loraguard (invariant modules-to-save,
drawn). Imports only torch and peft.
"""

import peft
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.lora_A = nn.Linear(6, 6)

    def forward(self, x):
        return self.lora_A(torch.tanh(self.fc(x)))


config = peft.LoraConfig(r=1, lora_alpha=2, target_modules=["fc"], modules_to_save=["lora_A"])
try:
    model = peft.get_peft_model(Net(), config)
except TypeError as err:
    raise AssertionError(
        "modules_to_save=['lora_A'] names only the model's module 'lora_A', yet get_peft_model fails because the "
        f"entry also matches LoRA's own 'fc.lora_A': {err}"
    ) from None
copied = sorted(n for n, m in model.base_model.model.named_modules() if hasattr(m, "modules_to_save"))
assert copied == ["lora_A"], f"modules_to_save=['lora_A'] should copy exactly ['lora_A']; peft copied {copied}"
print("no failure: this peft release accepts a module named 'lora_A' in modules_to_save")
