"""Hypothesis strategies, all in one module: module trees with adversarial names, LoRA configs, scenarios.

Names are drawn to collide: shared suffixes (`fc`, `xfc`), digits, and tokens of the key format itself
(`weight`, `lora`, `default`, `base`). Configs cover what a backend declares it supports: where it declares
`trainable_tokens`, a tree may start with an embedding (sometimes with an output head tied to it, the tie declared
the way transformers models declare it or not at all) and a config may train rows of it, written as users write
them (a list or a dict, index 0, the last index, an index twice). A drawn scenario is rebuilt from a plain,
printable spec, so a failure shrinks to a small case that a reproducer can rebuild.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from hypothesis import assume
from hypothesis import strategies as st
from torch import nn

from loraguard.core.config import LoraConfig
from loraguard.core.keys import split
from loraguard.harness.scenarios import Scenario
from loraguard.harness.zoo import ZooModel

#: Segment names chosen to trip naive matching: suffix look-alikes, digits, and the key format's own words.
NAMES = (
    "fc",
    "xfc",
    "fc_out",
    "proj",
    "head",
    "xhead",
    "layers",
    "0",
    "1",
    "model",
    "img_model",
    "weight",
    "lora",
    "lora_proj",
    "default",
    "base",
    "blocks",
    "bias_proj",
    "base_layer",
    "lora_A",
)
WIDTH = 6
#: Rows of a drawn tree's embedding.
VOCAB = 10
#: How a drawn tree's output head relates to its embedding: no head; a head sharing the embedding's tensor (a
#: plain model); the same, declared as transformers models declare it (`tie_word_embeddings`, `_tied_weights_keys`).
TIES = ("none", "shared", "declared")


@dataclass(frozen=True)
class TreeSpec:
    """A module tree as data: leaf paths (dotted) and their kinds, in forward order; optionally an embedding first
    (token ids in) and an output head tied to it last."""

    leaves: tuple[tuple[str, str], ...]  # (path, "linear" | "conv1d")
    embedding: str | None = None  # the embedding's path
    tie: str = "none"  # one of TIES

    def build(self) -> nn.Module:
        return TreeModel(self) if self.embedding is None else TokenTreeModel(self)

    @property
    def head(self) -> str | None:
        """The tied head's path (a top-level name no leaf or the embedding starts with), or None."""
        if self.tie == "none":
            return None
        taken = {split(p)[0] for p, _ in self.leaves} | {split(self.embedding or "")[0]}
        return next(n for n in ("lm_head", "decoder", "out_head") if n not in taken)


class Node(nn.Module):
    """A container whose forward applies its children in order, as real models do (so any child can be wrapped)."""

    def __init__(self) -> None:
        super().__init__()
        self.leaf_kinds: dict[str, str] = {}  # child name -> "linear" | "conv1d"; other children are Nodes

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, length, WIDTH)
        for name, child in self.named_children():
            kind = self.leaf_kinds.get(name)
            if kind == "conv1d":
                x = x + torch.tanh(child(x.transpose(1, 2)).transpose(1, 2))
            elif kind == "linear":
                x = x + torch.tanh(child(x))
            else:  # a Node, the embedding or the tied head
                x = child(x)
        return x


class TreeModel(Node):
    """A residual tree over the spec's leaves; every leaf sees width WIDTH, so any subset can be adapted."""

    def __init__(self, spec: TreeSpec):
        super().__init__()
        if spec.embedding is not None:  # first, so that the forward meets it first
            self._add(spec.embedding, "embedding", nn.Embedding(VOCAB, WIDTH))
        for path, kind in spec.leaves:
            self._add(
                path, kind, nn.Linear(WIDTH, WIDTH) if kind == "linear" else nn.Conv1d(WIDTH, WIDTH, 3, padding=1)
            )

    def _add(self, path: str, kind: str, module: nn.Module) -> None:
        parent: Node = self
        for seg in split(path)[:-1]:
            if not hasattr(parent, seg):
                parent.add_module(seg, Node())
            parent = getattr(parent, seg)
        parent.add_module(split(path)[-1], module)
        parent.leaf_kinds[split(path)[-1]] = kind


@dataclass
class TieConfig:
    """What transformers models declare about a tied head, the way peft reads it (`model.config`)."""

    tie_word_embeddings: bool = True


class TokenTreeModel(TreeModel):
    """A tree whose forward starts at an embedding (token ids in) and, with a tie, ends at a head tied to it."""

    def __init__(self, spec: TreeSpec):
        super().__init__(spec)
        self._embedding = spec.embedding or ""
        head = spec.head
        if head is not None:
            self._add(head, "head", nn.Linear(WIDTH, VOCAB))
            self.get_submodule(head).weight = self.get_submodule(self._embedding).weight
        if spec.tie == "declared":
            self.config = TieConfig()
            self._tied_weights_keys = [f"{head}.weight"]

    def get_input_embeddings(self) -> nn.Module:
        return self.get_submodule(self._embedding)


#: Names a drawn embedding takes, as models call theirs (a drawn prefix may still collide).
EMBEDDING_NAMES = ("embed_tokens", "wte", "word_embeddings", "embed")


# Built once: a strategy made inside a composite is a new object at every draw, and Hypothesis validates each new
# one before drawing (a tenth of op-sequence's shrinking went there). The draws are the same.
_NAME = st.sampled_from(NAMES)
_PATH = {depth: st.lists(_NAME, min_size=depth, max_size=depth) for depth in range(4)}
_EMBEDDING_NAME = st.sampled_from(EMBEDDING_NAMES)
_TIE = st.sampled_from(TIES)
_KINDS = {True: st.sampled_from(["linear", "conv1d"]), False: st.just("linear")}


@st.composite
def trees(draw: st.DrawFn, max_leaves: int = 5, conv: bool = True, embedding: bool = False) -> TreeSpec:
    """Trees of 1..max_leaves leaves at depth 1..3, with names drawn from NAMES so suffixes collide; with
    `embedding`, half of them start with an embedding (depth 1..2), two thirds of those with a tied head."""
    paths: list[str] = []
    emb = None
    if embedding and draw(st.booleans()):
        depth = draw(st.integers(1, 2))
        emb = ".".join([*draw(_PATH[depth - 1]), draw(_EMBEDDING_NAME)])
        paths.append(emb)
    for _ in range(draw(st.integers(1, max_leaves))):
        depth = draw(st.integers(1, 3))
        path = ".".join(draw(_PATH[depth]))
        # A path may be neither a prefix of another (a leaf cannot have children) nor a duplicate.
        if any(path == p or p.startswith(path + ".") or path.startswith(p + ".") for p in paths):
            continue
        paths.append(path)
    leaves = [p for p in paths if p != emb]
    assume(leaves)
    kinds = _KINDS[conv]
    tie = draw(_TIE) if emb is not None else "none"
    return TreeSpec(tuple((p, draw(kinds)) for p in leaves), emb, tie)


def _entry_for(draw: st.DrawFn, path: str) -> str:
    """A config entry naming `path` by a dot-boundary suffix of 1..all segments."""
    segs = split(path)
    return ".".join(segs[-draw(st.integers(1, len(segs))) :])


#: layers_to_transform and layers_pattern values a drawn config picks from, where the backend has ``layers``.
_LAYERS: list[int | list[int]] = [0, 1, [0, 1], [1]]
_LAYERS_PATTERNS: list[str | list[str] | None] = [None, "layers", "blocks", ["layers", "blocks"]]


@st.composite
def configs(
    draw: st.DrawFn,
    tree: TreeSpec,
    capabilities: frozenset[str],
    exclude: frozenset[str] = frozenset(),
    modules_to_save: bool = True,
    require_modules_to_save: bool = False,
) -> LoraConfig:
    """A LoRA config over `tree` using only what the backend supports; B is non-zero so the adapter has an effect.

    `require_modules_to_save` keeps a leaf untargeted and saves it, for invariants that judge only such configs.
    """
    leaves = [p for p, _ in tree.leaves if p not in exclude]
    assume(len(leaves) >= (2 if require_modules_to_save else 1))
    most = len(leaves) - 1 if require_modules_to_save else len(leaves)
    chosen = draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=most, unique=True))
    if draw(st.booleans()):
        target_modules: str | list[str] = "|".join(re.escape(p) for p in chosen)
    else:
        target_modules = sorted({_entry_for(draw, p) for p in chosen})
    rest = [p for p in leaves if p not in chosen]
    saved = None
    if (
        modules_to_save
        and "modules_to_save" in capabilities
        and rest
        and (require_modules_to_save or draw(st.booleans()))
    ):
        saved = [_entry_for(draw, draw(st.sampled_from(rest)))]
    r = draw(st.integers(1, 4))
    pattern_ok = "patterns" in capabilities and draw(st.booleans())
    some = split(draw(st.sampled_from(chosen)))[-1]
    layers: int | list[int] | None = None
    layers_pattern: str | list[str] | None = None
    if "layers" in capabilities and isinstance(target_modules, list) and draw(st.integers(0, 2)) == 0:
        layers = draw(st.sampled_from(_LAYERS))
        layers_pattern = draw(st.sampled_from(_LAYERS_PATTERNS))
    tokens = None
    if tree.embedding is not None and "trainable_tokens" in capabilities and draw(st.integers(0, 3)) > 0:
        tokens = draw(token_indices(tree.embedding))
    return LoraConfig(
        r=r,
        lora_alpha=draw(st.sampled_from([2, 3, 8, 16])),
        target_modules=target_modules,
        modules_to_save=saved,
        use_rslora="rslora" in capabilities and draw(st.booleans()),
        rank_pattern={some: draw(st.integers(1, 4))} if pattern_ok else {},
        alpha_pattern={some: draw(st.sampled_from([4, 12]))} if pattern_ok and draw(st.booleans()) else {},
        lora_bias="lora_bias" in capabilities and draw(st.booleans()),
        init_lora_weights=False,
        layers_to_transform=layers,
        layers_pattern=layers_pattern,
        trainable_token_indices=tokens,
    )


@st.composite
def token_indices(draw: st.DrawFn, embedding: str) -> list[int] | dict[str, list[int]]:
    """`trainable_token_indices` for the embedding at `embedding`, as users write it: a plain list (the input
    embedding) or a dict naming it by a dot-boundary suffix; rows drawn towards 0, the last row and repeats."""
    row = st.one_of(st.sampled_from([0, VOCAB - 1]), st.integers(0, VOCAB - 1))
    indices = draw(st.lists(row, min_size=1, max_size=5))
    if draw(st.booleans()):
        indices.append(draw(st.sampled_from(indices)))  # an index written twice
    return indices if draw(st.booleans()) else {_entry_for(draw, embedding): indices}


@dataclass(frozen=True)
class DrawnModel(ZooModel):
    """A drawn tree as a ZooModel, so invariants treat it like a built-in model; `spec` rebuilds it."""

    spec: TreeSpec | None = None


def tree_zoo_model(spec: TreeSpec) -> DrawnModel:
    inputs = _tree_inputs if spec.embedding is None else _token_inputs
    return DrawnModel("drawn", spec.build, inputs, [], [], spec=spec)


def _tree_inputs(gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.randn(2, 3, WIDTH, generator=gen),)


def _token_inputs(gen: torch.Generator) -> tuple[torch.Tensor]:
    """Every row of the embedding, then random ids: each trained row is met."""
    return (torch.cat([torch.arange(VOCAB), torch.randint(0, VOCAB, (2,), generator=gen)]).reshape(2, -1),)


@st.composite
def scenarios(
    draw: st.DrawFn,
    capabilities: frozenset[str],
    dtypes: tuple[torch.dtype, ...] = (torch.float32,),
    device: str = "cpu",
    modules_to_save: bool = False,
) -> Scenario:
    """A drawn scenario the reference accepts (so the config itself is valid), with a second adapter; with
    `modules_to_save` (and the capability) the first adapter always saves a module, so no example is wasted."""
    tree = draw(trees(conv="conv" in capabilities, embedding="trainable_tokens" in capabilities))
    required = modules_to_save and "modules_to_save" in capabilities
    config = draw(configs(tree, capabilities, require_modules_to_save=required))
    second = draw(configs(tree, capabilities, modules_to_save=True))
    scenario = Scenario(
        tree_zoo_model(tree),
        config,
        second,
        draw(st.sampled_from(dtypes)),
        device,
        seed=draw(st.integers(0, 2**16)),
        label=f"drawn{len(tree.leaves)}",
    )
    assume(_reference_accepts(scenario))
    return scenario


def _reference_accepts(scenario: Scenario) -> bool:
    """Configs the oracle rejects (a module both targeted and saved, a container selected) are not scenarios."""
    from loraguard.harness.scenarios import OTHER, reference_accepts

    return reference_accepts(scenario, [("default", scenario.config), (OTHER, scenario.second_config)])
