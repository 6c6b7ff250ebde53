"""peft 0.18.1: `hasattr` on a modules_to_save copy that only an inactive adapter has raises IndexError.

A second adapter with its own `modules_to_save` wraps that module in a ModulesToSaveWrapper whose
`active_adapters` is empty while adapter 'default' is active. Asking it for an attribute it lacks goes through
`ModulesToSaveWrapper.__getattr__` -> `_hasattr_wrapped`, which reads `self.active_adapters[0]`: IndexError instead
of AttributeError, so `hasattr` (which catches only AttributeError) raises, and so does every walk over the model's
modules that probes attributes (loraguard met it listing LoRA layers by `hasattr(m, "lora_A")`). 0.17.1 and 0.19.1
return False. Found by loraguard's isolation invariant on the llama zoo scenario (`loraguard matrix`, peft 0.18.1).
"""

from peft import LoraConfig, get_peft_model
from torch import nn

base = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))
model = get_peft_model(base, LoraConfig(target_modules=["0"]))
model.add_adapter("other", LoraConfig(target_modules=["0"], modules_to_save=["1"]))
wrapper = model.base_model.model[1]  # adapter 'other''s copy of the LayerNorm; adapter 'default' is active
try:
    found, error = hasattr(wrapper, "lora_A"), None
except Exception as err:  # noqa: BLE001 - the bug is which exception escapes
    found, error = None, err
assert error is None and found is False, f"hasattr on the modules_to_save copy of an inactive adapter raised {error!r}"
