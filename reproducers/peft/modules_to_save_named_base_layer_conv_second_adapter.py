"""peft 0.21.2: with modules_to_save=['base_layer'], a second adapter on a targeted Conv1d raises TypeError.

The entry names one module, the model's own Linear called 'base_layer'. peft matches it by name suffix over every
module, LoRA's own included, so it also wraps 'fc.base_layer' (the Conv1d that the LoRA layer of 'fc' wraps) in a
modules_to_save copy. Adding a second adapter to 'fc' then builds its factors with ``type(base_layer)``, now
ModulesToSaveWrapper, and raises "ModulesToSaveWrapper.__init__() got an unexpected keyword argument 'bias'". The
suffix match of modules_to_save_named_base_layer.py, met through a convolution. Found by loraguard (invariants
isolation and weighted-combination, drawn). Imports only torch and peft.
"""

import peft
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Conv1d(4, 4, kernel_size=1)
        self.base_layer = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(self.fc(x).transpose(1, 2))


model = peft.get_peft_model(Net(), peft.LoraConfig(r=1, target_modules=["fc"], modules_to_save=["base_layer"]))
copied = sorted(n for n, m in model.base_model.model.named_modules() if hasattr(m, "modules_to_save"))
try:
    model.add_adapter("other", peft.LoraConfig(r=1, target_modules=["fc"]))
except TypeError as err:
    said = f"modules_to_save=['base_layer'] copied {copied}; a second adapter on 'fc' fails: {err}"
    raise AssertionError(said) from None
print("no failure: this peft release adds the second adapter")
