"""adapters 1.3.0: a LoRA added to a bfloat16 model is created in float32, and the forward then fails.

LoRALayer.add_adapter moves the new LoRA to the layer's device but not to its dtype (LoRAConfig.dtype=None means
float32, not "the model's"), so the first forward raises a dtype mismatch. Imports torch and adapters (and
transformers, which adapters requires, for a tiny BERT).
"""

import adapters
import torch
from transformers import BertConfig, BertModel

torch.manual_seed(0)
config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
model = BertModel(config).to(torch.bfloat16).eval()
adapters.init(model)
model.add_adapter("lora", config=adapters.LoRAConfig(r=2, alpha=8))
model.set_active_adapters("lora")
try:
    model(torch.randint(0, 32, (2, 5)))
    error = None
except RuntimeError as err:
    error = err
assert error is None, f"forward of a bfloat16 model with a default LoRAConfig failed: {error}"
