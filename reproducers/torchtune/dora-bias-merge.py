"""torchtune 0.6.1: a trained DoRALinear with a bias computes something else than its merged checkpoint.

DoRALinear.forward returns mag_norm_scale * (x W^T + b) + mag_norm_scale * s * (x A^T B^T): the magnitude scale
multiplies the base *bias* too. get_merged_lora_ckpt folds the scale into the weight only (W' = m (W + sBA) /
||W + sBA||) and keeps b, as DoRA defines it. Once training has moved the magnitude off the weight norm, the
merged model's outputs differ from the model that was trained by (mag_norm_scale - 1) * b.
Only torch and torchtune are imported.
"""

import torch
from torchtune.modules.peft import DoRALinear, get_merged_lora_ckpt

torch.manual_seed(0)
model = torch.nn.Sequential(DoRALinear(8, 6, rank=2, alpha=4.0, use_bias=True))
layer = model[0]
with torch.no_grad():
    torch.nn.init.normal_(layer.lora_b.weight, std=0.1)  # a trained adapter: B is no longer zero
    layer.initialize_dora_magnitude()
    layer.magnitude.mul_(1.2)  # training moves the magnitude off the weight norm
x = torch.randn(3, 8)
with torch.no_grad():
    trained = model(x)
    merged = get_merged_lora_ckpt({k: v.clone() for k, v in model.state_dict().items()}, rank=2, alpha=4.0)
    exported = torch.nn.functional.linear(x, merged["0.weight"], merged["0.bias"])
    bias_scaled = (
        layer.magnitude / layer._get_weight_norm(layer.weight, layer.lora_b.weight @ layer.lora_a.weight) - 1
    ) * layer.bias

diff = (trained - exported).abs().max().item()
rest = (trained - exported - bias_scaled).abs().max().item()
assert diff < 1e-5, (
    f"the merged DoRA checkpoint's output differs from the trained DoRALinear's by {diff:.3g} (float32); "
    f"the difference is the bias scaled by the magnitude: {rest:.2g} left"
)
