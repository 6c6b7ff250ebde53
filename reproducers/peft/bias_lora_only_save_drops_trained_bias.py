"""peft 0.10-0.20: with `bias="lora_only"` the adapted layers' own biases train, but `save_pretrained` leaves them
out, so the reloaded adapter gives other outputs than the model that was trained.

`bias="lora_only"` marks `fc.base_layer.bias` trainable, yet the file holds lora_A / lora_B alone (checked on
0.10.0, 0.11.1, 0.12.0, 0.14.0, 0.16.0, 0.17.1, 0.18.1, 0.19.1, 0.20.0). Before that (0.8.2, 0.9.0) the bias is
not even made trainable: the first assertion says so. Reported upstream as huggingface/peft#3306, fixed by #3490
(0.21.2 passes). Found by loraguard's release matrix (`trained-biases`: a trained bias is saved and restored).
"""

import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from torch import nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 6)

    def forward(self, x):
        return self.fc(x)


def base() -> Model:
    torch.manual_seed(0)  # the same base weights each time
    return Model()


model = get_peft_model(base(), LoraConfig(r=2, target_modules=["fc"], bias="lora_only", init_lora_weights=False))
bias = model.base_model.model.fc.base_layer.bias
assert bias.requires_grad, "bias='lora_only' should train the adapted layer's bias"
with torch.no_grad():
    bias.add_(0.5)  # what a training step does to it
x = torch.randn(4, 8)
with tempfile.TemporaryDirectory() as out:
    model.save_pretrained(out)
    saved = sorted(load_file(f"{out}/adapter_model.safetensors"))
    reloaded = PeftModel.from_pretrained(base(), out)
    diff = (reloaded(x) - model(x)).abs().max().item()
assert diff <= 1e-6, f"the reloaded adapter's outputs differ by {diff:.3f}: the trained bias is not saved ({saved})"
print("no failure: peft saves and restores the bias that bias='lora_only' trains")
