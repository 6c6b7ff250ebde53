"""adapters 1.3.0: merging a DoRA LoRA (use_dora=True) changes the model's output.

The forward computes m / ||W + B A|| * (W x + b + s * B A x); merge_adapter writes m / ||W + B A|| * (W + B A):
the merged delta lacks the scaling s = alpha / r, and the forward scales the bias b by the magnitude while the
merged layer keeps b. Imports torch and adapters (and transformers, which adapters requires, for a tiny BERT).
"""

import adapters
import torch
from transformers import BertConfig, BertModel

torch.manual_seed(0)
config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
model = BertModel(config).eval()
adapters.init(model)
model.add_adapter("dora", config=adapters.LoRAConfig(r=2, alpha=8, use_dora=True))
model.set_active_adapters("dora")
with torch.no_grad():
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.normal_(std=0.1)  # a trained adapter: B is no longer zero
ids = torch.randint(0, 32, (2, 5))
with torch.no_grad():
    before = model(ids).last_hidden_state
    model.merge_adapter("dora")
    after = model(ids).last_hidden_state
diff = (before - after).abs().max().item()
assert diff < 1e-4, f"merge_adapter changed a DoRA model's output by {diff:.3g} (float32)"
