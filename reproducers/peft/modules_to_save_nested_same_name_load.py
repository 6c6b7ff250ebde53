"""peft 0.21.2: a modules_to_save entry that also names a module nested inside it saves what cannot be loaded.

modules_to_save=['fc'] on a model whose 'fc' holds a child also called 'fc' (as containers often do) wraps both
'fc' and 'fc.fc' (the dot-boundary suffix matches each), saves the copy under 'fc.fc.fc.*', and
PeftModel.from_pretrained of that very save raises KeyError: 'base_model.model.fc.fc.fc.weight'. Found by loraguard
(invariant modules-to-save, drawn, thorough profile). Imports only torch and peft.
"""

import tempfile

import peft
import torch
from torch import nn


class Box(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.fc = inner

    def forward(self, x):
        return self.fc(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = Box(Box(nn.Linear(6, 6)))
        self.fc_out = nn.Linear(6, 6)

    def forward(self, x):
        return self.fc_out(torch.tanh(self.fc(x)))


torch.manual_seed(0)
model = peft.get_peft_model(Net(), peft.LoraConfig(r=1, target_modules=["fc_out"], modules_to_save=["fc"]))
with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    try:
        peft.PeftModel.from_pretrained(Net(), directory)
    except KeyError as err:
        raise AssertionError(
            f"an adapter saved by peft does not load back: KeyError {err} (modules_to_save=['fc'] on a model whose "
            "'fc' contains another 'fc')"
        ) from None
print("no failure: this peft release loads its own save of a nested modules_to_save")
