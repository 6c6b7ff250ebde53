"""peft treats any module with a child named `base_layer` as one of its own tuner layers.

A plain model whose root (or any module) has a child called `base_layer` - a name peft reserves for the layer
a LoRA layer wraps - makes `merge_and_unload` fail: peft takes the user's module for a wrapped layer and calls
its `merge`. Found by loraguard (drawn module names, issue 12 item 7). Imports only torch and peft.
"""

import torch
from peft import LoraConfig, get_peft_model


class Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(6, 6)
        self.base_layer = torch.nn.Linear(6, 6)  # an ordinary layer that happens to carry peft's reserved name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base_layer(self.fc(x))


torch.manual_seed(0)
model = get_peft_model(Model(), LoraConfig(r=1, lora_alpha=2, target_modules="fc", init_lora_weights=False))
x = torch.randn(3, 6)
expected = model(x)
try:
    merged = model.merge_and_unload()(x)
except AttributeError as err:
    raise AssertionError(f"merge_and_unload fails on a model with a plain module named 'base_layer': {err}") from err
assert torch.allclose(merged, expected, atol=1e-5), "merged output differs from the unmerged forward"
print("no bug: merge_and_unload handles a module named 'base_layer'")
