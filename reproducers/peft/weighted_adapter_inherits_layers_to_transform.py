"""peft: add_weighted_adapter drops the modules outside the first adapter's layers_to_transform.

Adapter 'default' is restricted with `layers_to_transform=0`, adapter 'other' is not, and 'other' adapts a module
that 'default' leaves alone. The combination built by `add_weighted_adapter` copies the first adapter's config,
`layers_to_transform` included, with the union of the target_modules: it never reaches 'other''s module, so that
module's weighted delta is silently missing from the combination (here for combination_type='svd'; the weight of
'default' is 0, so the combination should be -2.5 x 'other' everywhere).
"""

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.add_module("0", nn.Linear(6, 6))
        self.proj = nn.Module()
        self.proj.head = nn.Module()
        self.proj.head.xhead = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj.head.xhead(getattr(self, "0")(x))


def adapted(model: nn.Module, adapter: str) -> list[str]:
    return [n for n, m in model.named_modules() if hasattr(m, "lora_A") and adapter in m.lora_A]


torch.manual_seed(0)
first = LoraConfig(r=2, lora_alpha=3, target_modules=["0", "xhead"], layers_to_transform=0, init_lora_weights=False)
model = get_peft_model(Model(), first)
model.add_adapter("other", LoraConfig(r=4, lora_alpha=16, target_modules=["0", "xhead"], init_lora_weights=False))
model.add_weighted_adapter(["default", "other"], [0.0, -2.5], "combined", combination_type="svd")
missing = sorted((set(adapted(model, "default")) | set(adapted(model, "other"))) - set(adapted(model, "combined")))
assert not missing, (
    f"the combination leaves out {missing}, which adapter 'other' adapts: it inherited 'default''s "
    f"layers_to_transform={model.peft_config['combined'].layers_to_transform}"
)
