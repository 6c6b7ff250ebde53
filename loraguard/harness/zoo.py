"""The built-in tiny models: each built in code from a config (nothing downloaded), with inputs and LoRA targets.

Every model is small enough that one forward takes well under a millisecond on CPU, and together they cover
Linear, GPT-2 Conv1D (fan_in_fan_out), Embedding, Conv1d/Conv2d, and adversarial module names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import nn

from loraguard.harness import zoo_hf as hf

#: Model families (loraguard.backends.base.FAMILIES): a backend wraps only the families in its ``wrappable``.
PLAIN, TRANSFORMERS = "plain", "transformers"


@dataclass(frozen=True)
class ZooModel:
    """A tiny model recipe: how to build it, what to feed it, and which modules a LoRA config should target.

    - `name`: the scenario id's first part; `build`: a function returning a fresh model (weights from the global
      torch seed); `inputs`: a function of a ``torch.Generator`` returning the forward's positional arguments.
    - `target_modules` / `modules_to_save`: the first adapter's, as in a ``LoraConfig``.
    - `second_targets` / `second_modules_to_save`: the second adapter ("other") of two-adapter invariants
      (default: the first adapter's targets, no modules_to_save); choose other modules to test isolation.
    - `needs`: Python modules that must import for the model to be built (``("transformers",)``); a model whose
      needs are missing is left out of the zoo.
    - `task_type`: peft's task type (``"SEQ_CLS"``...), for a model built the way users build task models.
    - `target_parameters`: parameters adapted directly (MoE expert stacks), by both adapters.
    - `family`: ``"plain"`` (any torch modules) or ``"transformers"`` (a ``PreTrainedModel``); a backend that
      cannot wrap the family skips the model's scenarios with that reason. The layer kinds a scenario needs
      (Linear, Embedding, Conv, GPT-2 Conv1D) are read off the built model, not declared.
    """

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], tuple]
    target_modules: list[str] | str
    modules_to_save: list[str] = field(default_factory=list)
    needs: tuple[str, ...] = ()
    task_type: str | None = None  # peft's task type, for models built the way users build task models
    family: str = PLAIN
    second_targets: list[str] | str | None = None
    second_modules_to_save: list[str] | None = None
    target_parameters: list[str] | None = None  # both adapters' (peft wants one parameter set per model)

    def make(self, seed: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu") -> nn.Module:
        """A fresh instance with deterministic weights for `seed`."""
        torch.manual_seed(seed)
        model = self.build().to(device=device, dtype=dtype)
        return model.eval()

    def example(self, seed: int = 0, device: str = "cpu") -> tuple:
        """Deterministic inputs for `seed`."""
        gen = torch.Generator().manual_seed(seed)
        return tuple(t.to(device) for t in self.inputs(gen))


def run(model: nn.Module, inputs: tuple, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Forward `inputs` through a base, reference or peft-wrapped model and return the output tensor."""
    if dtype is not None:
        inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    out = model(*inputs)
    return getattr(out, "logits", out)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.0)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.fc2(self.drop(self.act(self.fc1(x))))))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 1)
        self.seq = nn.Conv1d(6, 4, 3)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))  # (b, 6, 5, 5)
        h = self.seq(h.flatten(2))  # (b, 4, 23)
        return self.head(h.mean(-1))


class EmbeddingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte = nn.Embedding(20, 8)
        self.proj = nn.Linear(8, 8)
        self.lm_head = nn.Linear(8, 20)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.tanh(self.proj(self.wte(ids))))


class ScaledEmbedding(nn.Embedding):
    """An embedding that multiplies its output by a constant, as Gemma's does (`embed_scale`, a buffer)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, embed_scale: float):
        super().__init__(num_embeddings, embedding_dim)
        self.register_buffer("embed_scale", torch.tensor(embed_scale), persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        scale = cast(torch.Tensor, self.embed_scale)
        return super().forward(ids) * scale.to(self.weight.dtype)


class ScaledEmbeddingModel(EmbeddingModel):
    """The embedding model with Gemma's sqrt(hidden size) on its input embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.wte = ScaledEmbedding(20, 8, embed_scale=8**0.5)


class TiedEmbeddingModel(EmbeddingModel):
    """The embedding model with its output head tied to its input embedding (one weight), as most LMs have."""

    def __init__(self) -> None:
        super().__init__()
        self.lm_head.weight = self.wte.weight


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.fc_out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc_out(torch.tanh(self.fc(x)))


class Tower(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(width), Block(width)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class NestedNames(nn.Module):
    """Colliding names: `model.layers.0.fc` beside `img_model.layers.0.fc`, `head` beside `xhead`."""

    def __init__(self) -> None:
        super().__init__()
        self.model = Tower(8)
        self.img_model = Tower(8)
        self.head = nn.Linear(8, 4)
        self.xhead = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.model(x)) + self.xhead(self.img_model(x))


class Experts(nn.Module):
    """MoE experts as transformers' Llama4 holds them: stacked weights (experts, in, out) as bare parameters, no
    Linear modules, applied with bmm; only `target_parameters` can adapt them."""

    def __init__(self, experts: int = 3, hidden: int = 8, inner: int = 6) -> None:
        super().__init__()
        self.gate_up_proj = nn.Parameter(torch.randn(experts, hidden, 2 * inner) / hidden**0.5)
        self.down_proj = nn.Parameter(torch.randn(experts, inner, hidden) / inner**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = torch.bmm(x, self.gate_up_proj).chunk(2, dim=-1)  # x: (experts, tokens, hidden)
        return torch.bmm(torch.nn.functional.silu(gate) * up, self.down_proj)


class MoE(nn.Module):
    """A soft mixture of experts: every token goes through every expert, weighted by a softmax router (no top-k, so
    no routing decision flips under rounding and each expert's weights reach the output)."""

    def __init__(self) -> None:
        super().__init__()
        self.router = nn.Linear(8, 3)  # its 2D weight is a target_parameters entry; its bias trains with lora_only
        self.experts = Experts()
        self.shared = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.router(x).softmax(-1)  # (tokens, experts)
        per_expert = self.experts(x.unsqueeze(0).expand(weights.shape[-1], -1, -1))
        return self.head(torch.einsum("te,eth->th", weights, per_expert) + self.shared(x))


def _ids(vocab: int, length: int) -> Callable[[torch.Generator], tuple]:
    return lambda g: (torch.randint(0, vocab, (2, length), generator=g),)


_TF = ("transformers",)
_T: dict[str, Any] = {"needs": _TF, "family": TRANSFORMERS}

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel(
            "mlp", MLP, lambda g: (torch.randn(3, 8, generator=g),), ["fc1", "fc2"], ["head"], second_targets=["fc1"]
        ),
        ZooModel(
            "convnet",
            ConvNet,
            lambda g: (torch.randn(2, 3, 5, 5, generator=g),),
            ["conv1", "conv2", "seq"],
            ["head"],
            second_targets=["conv2"],
        ),
        ZooModel("embedding", EmbeddingModel, _ids(20, 5), ["wte", "proj"], ["lm_head"], second_targets=["proj"]),
        ZooModel("scaled-embedding", ScaledEmbeddingModel, _ids(20, 5), ["wte", "proj"], ["lm_head"]),
        ZooModel("tied-embedding", TiedEmbeddingModel, _ids(20, 5), ["wte", "proj"]),
        ZooModel(
            "nested",
            NestedNames,
            lambda g: (torch.randn(3, 8, generator=g),),
            ["model.layers.0.fc", "fc_out"],
            ["model.layers.1.fc"],
            second_targets=["fc_out"],
            second_modules_to_save=["xhead"],
        ),
        # target_parameters: the 3D expert stacks and the router's 2D weight, beside a Linear target; placed after
        # the plain models most mutants are caught on, so tests/test_mutants.py reaches it only for its own mutant
        ZooModel(
            "moe",
            MoE,
            lambda g: (torch.randn(5, 8, generator=g),),
            ["shared"],
            ["head"],
            target_parameters=["experts.gate_up_proj", "experts.down_proj", "router.weight"],
            second_targets=[],
        ),
        ZooModel(
            "llama",
            hf.llama,
            _ids(32, 6),
            ["q_proj", "v_proj", "gate_proj"],
            ["lm_head"],
            second_targets=["v_proj", "down_proj"],
            second_modules_to_save=["model.norm"],
            **_T,
        ),
        ZooModel("gpt2", hf.gpt2, _ids(32, 6), ["c_attn", "c_proj"], ["ln_f"], second_targets=["c_fc"], **_T),
        ZooModel(  # adapters' LoRA roles: attention q/v, then v and the MLP's first linear ("intermediate")
            "bert",
            hf.bert,
            _ids(32, 6),
            ["query", "value"],
            ["cls.predictions.transform.dense"],
            second_targets=["value", "intermediate.dense"],
            **_T,
        ),
        # task models: peft adds the classification heads to modules_to_save itself; LMs list lm_head. Targets
        # reach past the attention (dense, fc, gate_proj), so the adapter's effect clears the bfloat16 bound
        ZooModel(
            "bert-tokcls",
            hf.bert_tokcls,
            _ids(32, 6),
            ["query", "value", "dense"],
            needs=_TF,
            task_type="TOKEN_CLS",
            family=TRANSFORMERS,
        ),
        ZooModel(
            "llama-seqcls",
            hf.llama_seqcls,
            _ids(32, 6),
            ["q_proj", "v_proj", "gate_proj"],
            needs=_TF,
            task_type="SEQ_CLS",
            family=TRANSFORMERS,
        ),
        ZooModel(
            "llama-causal", hf.llama, _ids(32, 6), ["q_proj", "v_proj"], ["lm_head"], _TF, "CAUSAL_LM", TRANSFORMERS
        ),
        ZooModel(
            "bart-seq2seq",
            hf.bart_seq2seq,
            _ids(32, 6),
            ["q_proj", "v_proj", "fc1", "fc2"],
            ["lm_head"],
            _TF,
            "SEQ_2_SEQ_LM",
            TRANSFORMERS,
        ),
    ]
}


def available(names: list[str] | None = None) -> list[ZooModel]:
    """Zoo entries whose optional dependencies import; `names` picks a subset (unknown names are an error)."""
    import importlib.util

    if names:
        unknown = [n for n in names if n not in ZOO]
        if unknown:
            raise ValueError(f"unknown zoo model(s) {unknown}; choose from {sorted(ZOO)}")
    picked = [ZOO[n] for n in names] if names else list(ZOO.values())
    return [m for m in picked if all(importlib.util.find_spec(d) is not None for d in m.needs)]
