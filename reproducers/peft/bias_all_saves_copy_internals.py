"""peft: with bias="all", a modules_to_save module's bias is saved under two keys outside peft's format.

`LoraConfig(bias="all", modules_to_save=["head"])` on a model whose `head` has a bias: `save_pretrained` writes
`head.bias` (the adapter's copy, peft's own key) and also `head.modules_to_save.bias` (the same tensor under an
internal name with the adapter name cut out) and `head.original_module.bias` (the frozen original, never trained).
The bias="all" branch (`_get_learnable_bias_state_dict`) takes every key ending in `.bias` from the wrapped model's
state dict without mapping modules_to_save wrappers as the rest of the save does. Found by loraguard's
trained-biases invariant (peft 0.21.2).
"""

import tempfile

from peft import LoraConfig, get_peft_model
from peft.utils import load_peft_weights
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.fc(x))


model = get_peft_model(Model(), LoraConfig(r=2, target_modules=["fc"], modules_to_save=["head"], bias="all"))
with tempfile.TemporaryDirectory() as d:
    model.save_pretrained(d)
    keys = sorted(load_peft_weights(d))
internal = [k for k in keys if ".modules_to_save." in k or ".original_module." in k]
assert not internal, f"saved keys outside peft's format (wrapper internals) with bias='all': {internal}; all: {keys}"
