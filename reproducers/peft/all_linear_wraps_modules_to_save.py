"""peft: a second adapter with target_modules="all-linear" puts LoRA on the first adapter's modules_to_save copies.

With adapter "default" keeping `head` in modules_to_save, `add_adapter("second", target_modules="all-linear")`
wraps `head.original_module` and `head.modules_to_save.default` (LoRA internals) with LoRA layers of "second".
Found by loraguard's target-forms invariant.
"""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(torch.relu(self.fc(x)))


model = get_peft_model(Net(), LoraConfig(r=2, target_modules=["fc"], modules_to_save=["head"]))
model.add_adapter("second", LoraConfig(r=2, target_modules="all-linear"))
inside = [
    name
    for name, module in model.base_model.model.named_modules()
    if hasattr(module, "lora_A")
    and "second" in module.lora_A
    and ("original_module" in name or "modules_to_save" in name)
]
assert not inside, f"all-linear on the second adapter put LoRA on modules_to_save internals: {inside}"
