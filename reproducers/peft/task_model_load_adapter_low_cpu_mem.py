"""peft 0.13: `load_adapter` on a sequence or token classification model raises TypeError.

`PeftModel.load_adapter` calls `self.add_adapter(name, config, low_cpu_mem_usage=...)`, but
`PeftModelForSequenceClassification` and `PeftModelForTokenClassification` override `add_adapter` without that
argument, so loading a second adapter into a classification model fails. Fixed in 0.14.0. Found by loraguard's
task-heads invariant (`loraguard matrix` over peft 0.8.2 to 0.21.2).
"""

import tempfile

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import BertConfig, BertForTokenClassification

torch.manual_seed(0)
config = BertConfig(
    vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3
)
lora = LoraConfig(r=2, target_modules=["query", "value"], task_type="TOKEN_CLS")
with tempfile.TemporaryDirectory() as saved:
    get_peft_model(BertForTokenClassification(config), lora).save_pretrained(saved)
    model = PeftModel.from_pretrained(BertForTokenClassification(config), saved)
    try:
        model.load_adapter(saved, adapter_name="other")
        failure = None
    except TypeError as err:
        failure = str(err)
assert failure is None, f"load_adapter on a token classification model failed: {failure}"
