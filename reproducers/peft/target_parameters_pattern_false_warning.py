"""peft 0.21: an `alpha_pattern`/`rank_pattern` key for a `target_parameters` entry is applied, yet peft warns that
it "did not match any targeted module and was ignored".

`BaseTuner.inject_adapter` checks the pattern keys against `targeted_module_names` only, never against
`targeted_parameter_names`, although `_create_and_replace` looks patterns up by the parameter's key
(`experts.w`) and applies them. A user who reads the warning drops a pattern that works, or believes the
adapter trains at the default scale. The warning came with huggingface/peft#3588 (for #3582), which did not
consider target_parameters. Found by loraguard's agreement check on its `moe` zoo model (rsLoRA+patterns row); the
scale itself agrees with loraguard's reference, and no invariant judges warnings (no known-failures entry).
"""

import warnings

import torch
from peft import LoraConfig, get_peft_model
from torch import nn


class Experts(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(3, 8, 6))

    def forward(self, x):
        return torch.bmm(x, self.w)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.experts = Experts()

    def forward(self, x):
        return self.experts(x)


config = LoraConfig(r=2, lora_alpha=4, target_parameters=["experts.w"], alpha_pattern={"experts.w": 8})
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = get_peft_model(Model(), config)
scaling = model.base_model.model.experts.scaling["default"]
ignored = [str(w.message) for w in caught if "were ignored" in str(w.message)]
assert scaling == 8 / 2, f"alpha_pattern not applied: scaling {scaling}, expected 4.0"
assert not ignored, f"alpha_pattern for experts.w is applied (scaling {scaling} = 8 / 2), yet peft warns: {ignored[0]}"
