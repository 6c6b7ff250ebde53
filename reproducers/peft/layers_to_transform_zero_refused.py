"""peft 0.14-0.20: `layers_to_transform=0` with `layers_pattern` is refused as if no layer were given.

`LoraConfig.__post_init__` tests `if self.layers_pattern and not self.layers_to_transform`, so the first layer's
index, 0 (a documented `int` value), reads as "not specified" and the config raises ValueError. Introduced in
0.14.0 with the check, fixed in 0.21 (`layers_to_transform is None`). Found by loraguard's drawn configs
(`loraguard matrix`, dtype/isolation/roundtrip drawn examples).
"""

from peft import LoraConfig

try:
    LoraConfig(r=2, target_modules=["fc"], layers_to_transform=0, layers_pattern="layers")
    refused = None
except ValueError as err:
    refused = str(err)
assert refused is None, f"layers_to_transform=0 (layer 0) with layers_pattern was refused: {refused}"
