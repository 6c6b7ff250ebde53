"""torchtune 0.6.1: a base module whose name contains "lora" breaks get_merged_lora_ckpt (and leaks into adapters).

_get_lora_modules and get_adapter_state_dict pick LoRA keys with a substring test ("lora" in key or "magnitude"
in key), so an ordinary layer named e.g. "lora" or "flora_head" is taken for a LoRA module: merging raises
KeyError, and the adapter checkpoint carries that layer's base weights. Only torch and torchtune are imported.
"""

import torch
from torch import nn
from torchtune.modules.peft import LoRALinear, get_adapter_state_dict, get_merged_lora_ckpt

torch.manual_seed(0)
model = nn.Module()
model.fc = LoRALinear(4, 4, rank=2, alpha=4.0)  # the adapted layer
model.flora_head = nn.Linear(4, 2)  # a plain layer that happens to contain "lora"

leaked = sorted(k for k in get_adapter_state_dict(model.state_dict()) if not k.startswith("fc."))
try:
    get_merged_lora_ckpt(dict(model.state_dict()), rank=2, alpha=4.0)
    error = None
except KeyError as err:
    error = err
assert error is None and not leaked, (
    f"get_merged_lora_ckpt raised KeyError {error} and get_adapter_state_dict saved base weights {leaked} "
    "of a plain layer named 'flora_head'"
)
