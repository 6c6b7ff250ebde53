"""Hypothesis strategies, all in one module: module trees with adversarial names, LoRA configs, scenarios.

Names are drawn to collide: shared suffixes (`fc`, `xfc`), digits, and tokens of the key format itself
(`weight`, `lora`, `default`, `base`). Configs cover what a backend declares it supports. A drawn scenario
is rebuilt from a plain, printable spec, so a failure shrinks to a small case that a reproducer can rebuild.
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


@dataclass(frozen=True)
class TreeSpec:
    """A module tree as data: leaf paths (dotted) and their kinds, in forward order."""

    leaves: tuple[tuple[str, str], ...]  # (path, "linear" | "conv1d")

    def build(self) -> nn.Module:
        return TreeModel(self)


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
            else:
                x = child(x)
        return x


class TreeModel(Node):
    """A residual tree over the spec's leaves; every leaf sees width WIDTH, so any subset can be adapted."""

    def __init__(self, spec: TreeSpec):
        super().__init__()
        for path, kind in spec.leaves:
            parent: Node = self
            for seg in split(path)[:-1]:
                if not hasattr(parent, seg):
                    parent.add_module(seg, Node())
                parent = getattr(parent, seg)
            leaf = split(path)[-1]
            parent.add_module(
                leaf, nn.Linear(WIDTH, WIDTH) if kind == "linear" else nn.Conv1d(WIDTH, WIDTH, 3, padding=1)
            )
            parent.leaf_kinds[leaf] = kind


@st.composite
def trees(draw: st.DrawFn, max_leaves: int = 5, conv: bool = True) -> TreeSpec:
    """Trees of 1..max_leaves leaves at depth 1..3, with names drawn from NAMES so suffixes collide."""
    paths: list[str] = []
    for _ in range(draw(st.integers(1, max_leaves))):
        depth = draw(st.integers(1, 3))
        path = ".".join(draw(st.lists(st.sampled_from(NAMES), min_size=depth, max_size=depth)))
        # A path may be neither a prefix of another (a leaf cannot have children) nor a duplicate.
        if any(path == p or p.startswith(path + ".") or path.startswith(p + ".") for p in paths):
            continue
        paths.append(path)
    assume(paths)
    kinds = st.sampled_from(["linear", "conv1d"]) if conv else st.just("linear")
    return TreeSpec(tuple((p, draw(kinds)) for p in paths))


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
) -> LoraConfig:
    """A LoRA config over `tree` using only what the backend supports; B is non-zero so the adapter has an effect."""
    leaves = [p for p, _ in tree.leaves if p not in exclude]
    assume(leaves)
    chosen = draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=len(leaves), unique=True))
    if draw(st.booleans()):
        target_modules: str | list[str] = "|".join(re.escape(p) for p in chosen)
    else:
        target_modules = sorted({_entry_for(draw, p) for p in chosen})
    rest = [p for p in leaves if p not in chosen]
    saved = None
    if modules_to_save and "modules_to_save" in capabilities and rest and draw(st.booleans()):
        saved = [_entry_for(draw, draw(st.sampled_from(rest)))]
    r = draw(st.integers(1, 4))
    pattern_ok = "patterns" in capabilities and draw(st.booleans())
    some = split(draw(st.sampled_from(chosen)))[-1]
    layers: int | list[int] | None = None
    layers_pattern: str | list[str] | None = None
    if "layers" in capabilities and isinstance(target_modules, list) and draw(st.integers(0, 2)) == 0:
        layers = draw(st.sampled_from(_LAYERS))
        layers_pattern = draw(st.sampled_from(_LAYERS_PATTERNS))
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
    )


@dataclass(frozen=True)
class DrawnModel(ZooModel):
    """A drawn tree as a ZooModel, so invariants treat it like a built-in model; `spec` rebuilds it."""

    spec: TreeSpec | None = None


def tree_zoo_model(spec: TreeSpec) -> DrawnModel:
    return DrawnModel("drawn", spec.build, _tree_inputs, [], [], spec=spec)


def _tree_inputs(gen: torch.Generator) -> tuple[torch.Tensor]:
    return (torch.randn(2, 3, WIDTH, generator=gen),)


@st.composite
def scenarios(
    draw: st.DrawFn,
    capabilities: frozenset[str],
    dtypes: tuple[torch.dtype, ...] = (torch.float32,),
    device: str = "cpu",
) -> Scenario:
    """A drawn scenario the reference accepts (so the config itself is valid), with a second adapter."""
    tree = draw(trees(conv="conv" in capabilities))
    config = draw(configs(tree, capabilities))
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
    from loraguard.harness.scenarios import OTHER, oracle

    try:
        oracle(scenario, [("default", scenario.config), (OTHER, scenario.second_config)])
    except ValueError:
        return False
    return True
