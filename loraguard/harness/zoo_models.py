"""The built-in tiny models' modules and inputs (torch): the zoo's table (loraguard.harness.zoo) names them, and
imports this module only when a model is built or its inputs drawn."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


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


def randn(generator: torch.Generator, *shape: int) -> tuple[torch.Tensor]:
    """One float input of `shape`, drawn from `generator`."""
    return (torch.randn(*shape, generator=generator),)


def token_ids(generator: torch.Generator, vocab: int, length: int) -> tuple[torch.Tensor]:
    """A batch of two sequences of `length` token ids below `vocab`, drawn from `generator`."""
    return (torch.randint(0, vocab, (2, length), generator=generator),)
