"""peft 0.16-0.17: unmerging an OFT adapter does not restore the base weight, in float64 as in float32.

OFT merges by multiplying the weight by its block rotation R and unmerges by multiplying by R^T, which undoes the
merge only if R is orthogonal. Since 0.16.0, R is by default (`use_cayley_neumann=True`) a 5-term Neumann series
for the Cayley transform: an approximation, so R R^T != I and W R R^T != W. The error is the formula's, not
rounding: here the float64 weight is left off by 8e-4, while an exact inverse of R restores it to 1e-16 (on
loraguard's float32 zoo scenario: off by 1.6e-4 where float32's bound is 3.3e-6). Fixed in 0.18.0, whose unmerge
multiplies by torch.linalg.inv(R) (computed in float32: 3e-8 here). Found by loraguard's merge-unmerge invariant
on the OFT zoo scenario (`loraguard matrix`, peft 0.16.0). No upstream thread found.
"""

import torch
from peft import OFTConfig, get_peft_model
from torch import nn

torch.manual_seed(0)
base = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16)).double()
original = base[2].weight.detach().clone()
model = get_peft_model(base, OFTConfig(target_modules=["2"], r=0, oft_block_size=4, init_weights=False))
model.merge_adapter()
model.unmerge_adapter()
restored = model.base_model.model[2].get_base_layer().weight.detach()
error = (restored - original).abs().max().item()
assert error < 1e-6, f"OFT merge then unmerge (float64) leaves the weight off by {error:.3g}; an exact inverse: ~1e-16"
