"""peft: a target_modules list with an entry that matches nothing is ignored without a word.

`target_modules=["q_proj", "v_prj"]` (a typo) wraps q_proj only, with no error and no warning; only a list of
which no entry matches is an error. The user trains fewer modules than asked. Found by loraguard's
unmatched-target invariant.
"""

import warnings

from peft import LoraConfig, get_peft_model
from torch import nn


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(8, 8)
        self.v_proj = nn.Linear(8, 8)

    def forward(self, x):
        return self.q_proj(x) + self.v_proj(x)


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    get_peft_model(Attention(), LoraConfig(r=2, target_modules=["q_proj", "v_prj"]))
named = [str(w.message) for w in caught if "v_prj" in str(w.message)]
assert named, "target_modules entry 'v_prj' matches no module, yet peft neither raised nor warned"
