"""The zoo's tiny transformers models, each built from its config class as users build them (imported when built).

Sizes are the smallest that keep each architecture's own structure: 32 tokens, width 16, one or two layers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def _hf(model_class: str, config_class: str, num_labels: int | None = None, **config: Any) -> Callable[[], nn.Module]:
    """A builder of a tiny transformers model: `model_class` on `config_class(**config)`, imported when built."""

    def build() -> nn.Module:
        import transformers

        cfg = getattr(transformers, config_class)(**config)
        if num_labels is not None:
            cfg.num_labels = num_labels
        return getattr(transformers, model_class)(cfg)

    build.__qualname__ = build.__name__ = f"build_{model_class}"
    return build


#: What the tiny transformers models share: 32 tokens, width 16, two heads, 32 positions, no dropout.
_TINY = {"vocab_size": 32, "max_position_embeddings": 32}
_LLAMA = {**_TINY, "hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_key_value_heads": 2}
_BERT: dict[str, Any] = {**_TINY, "hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}
_BERT.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

llama = _hf("LlamaForCausalLM", "LlamaConfig", num_hidden_layers=2, **_LLAMA)
gpt2 = _hf(
    "GPT2LMHeadModel",
    "GPT2Config",
    vocab_size=32,
    n_positions=32,
    n_embd=16,
    n_layer=2,
    n_head=2,
    bos_token_id=0,
    eos_token_id=0,
    resid_pdrop=0.0,
    embd_pdrop=0.0,
    attn_pdrop=0.0,
)
bert_tokcls = _hf("BertForTokenClassification", "BertConfig", 3, num_hidden_layers=1, **_BERT)
# the classifier reads the last non-padding token
llama_seqcls = _hf("LlamaForSequenceClassification", "LlamaConfig", 3, num_hidden_layers=1, pad_token_id=0, **_LLAMA)
bart_seq2seq = _hf(
    "BartForConditionalGeneration",
    "BartConfig",
    vocab_size=32,
    d_model=16,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    max_position_embeddings=32,
    dropout=0.0,
    attention_dropout=0.0,
    activation_dropout=0.0,
    tie_word_embeddings=False,  # lm_head its own module, so modules_to_save copies only it
)
# A BERT (Linear layers with biases, LayerNorms): the family AdapterHub adapters was built around. BERT's
# initializer_range 0.02 leaves LoRA's effect on the logits under the bfloat16 bound: 0.05.
bert = _hf("BertForMaskedLM", "BertConfig", num_hidden_layers=2, initializer_range=0.05, **_BERT)
