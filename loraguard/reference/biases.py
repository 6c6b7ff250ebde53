"""Which base biases an adapter trains and saves, per its `bias` option (peft's "none", "lora_only", "all").

``lora_only``: the biases of the layers LoRA wraps (``<path>.base_layer.bias``). ``all``: every bias of the base
model (``<module>.bias``), those of wrapped layers included; a modules_to_save copy's bias is the copy's own (saved
with it), and the original module behind a copy is never trained. The biases are shared by every adapter: adapter
names never appear in their keys.
"""

from __future__ import annotations

from torch import nn

from loraguard.core.keys import BASE_BIAS, MODULE_BIAS, AdapterKey
from loraguard.reference.layers import LoraLayer
from loraguard.reference.saved import ModulesToSave


def bias_keys(model: nn.Module, mode: str) -> list[AdapterKey]:
    """The base biases an adapter with ``bias=mode`` trains and saves, in module order."""
    if mode == "none":
        return []
    keys: list[AdapterKey] = []
    opaque: list[str] = []  # wrappers whose insides are LoRA internals or saved copies, not base modules
    for path, module in model.named_modules():
        if any(path.startswith(f"{outer}.") for outer in opaque):
            continue
        if isinstance(module, (LoraLayer, ModulesToSave)):
            opaque.append(path)
        if isinstance(module, LoraLayer):
            if getattr(module.base_layer, "bias", None) is not None:
                keys.append(AdapterKey(path, BASE_BIAS, "bias"))
        elif mode == "all" and not isinstance(module, ModulesToSave) and module._parameters.get("bias") is not None:
            keys.append(AdapterKey(path, MODULE_BIAS, "bias"))
    return keys
