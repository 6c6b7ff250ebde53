"""adapters 1.3.0: train_adapter leaves a static-head model's pre-trained prediction head trainable.

train_adapter calls freeze_model ("Freezes all weights of the model"), which freezes only model.base_model; the
masked-LM head of BertForMaskedLM keeps requires_grad, so "training the adapter" also trains pre-trained weights.
Imports torch and adapters (and transformers, which adapters requires, for a tiny BERT).
"""

import adapters
import torch
from transformers import BertConfig, BertForMaskedLM

torch.manual_seed(0)
config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
model = BertForMaskedLM(config)
adapters.init(model)
model.add_adapter("lora", config=adapters.LoRAConfig(r=2, alpha=8))
model.train_adapter("lora")
extra = sorted(n for n, p in model.named_parameters() if p.requires_grad and ".loras." not in n)
assert not extra, f"train_adapter('lora') left {len(extra)} pre-trained parameters trainable, e.g. {extra[:3]}"
