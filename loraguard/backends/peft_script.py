"""Standalone peft reproducers: a script importing only torch and peft that builds a drawn model in code, performs
the failing invariant's operations and ends in an assertion with a readable message (what a bug report needs).

Expected values (which modules a config selects, which keys a save holds, which parameters train) come from
loraguard's reference implementation when the script is written, and are written into it as literals.
"""

from __future__ import annotations

from typing import Any

import torch

from loraguard.core.config import LoraConfig
from loraguard.core.tolerance import tolerance

_PROLOGUE = '''"""Reproducer: peft {version}, {what}.

Found by loraguard (invariant {invariant!r}: {promise}), on a drawn model shrunk by Hypothesis.
Standalone: imports only torch and peft. Run `python {{this file}}`: it ends in an AssertionError while the bug is
present, and prints "no failure" once it is fixed.
"""

import tempfile

import peft
import torch
from torch import nn

torch.manual_seed(0)
WIDTH = 6
LEAVES = {leaves!r}  # (module path, kind) of each leaf, in forward order
DTYPE = {dtype}
SEED = {seed}


class Node(nn.Module):
    """A container applying its children in order; each leaf adds tanh(leaf(x)) to a (batch, length, WIDTH) input."""

    def __init__(self):
        super().__init__()
        self.leaf_kinds = {{}}

    def forward(self, x):
        for name, child in self.named_children():
            kind = self.leaf_kinds.get(name)
            if kind == "conv1d":
                x = x + torch.tanh(child(x.transpose(1, 2)).transpose(1, 2))
            elif kind == "linear":
                x = x + torch.tanh(child(x))
            else:
                x = child(x)
        return x


def build():
    torch.manual_seed(SEED)
    root = Node()
    for path, kind in LEAVES:
        *parents, leaf = path.split(".")
        parent = root
        for segment in parents:
            if not hasattr(parent, segment):
                parent.add_module(segment, Node())
            parent = getattr(parent, segment)
        layer = nn.Linear(WIDTH, WIDTH) if kind == "linear" else nn.Conv1d(WIDTH, WIDTH, 3, padding=1)
        parent.add_module(leaf, layer)
        parent.leaf_kinds[leaf] = kind
    return root.to(DTYPE).eval()


x = torch.randn(2, 3, WIDTH, generator=torch.Generator().manual_seed(SEED)).to(DTYPE)
config = peft.LoraConfig(**{config})


def wrapped_modules(model):
    inner = model.base_model.model
    return sorted(n for n, m in inner.named_modules() if hasattr(m, "lora_A") and n.split(".")[-1] != "base_layer")


def copied_modules(model):
    inner = model.base_model.model
    return sorted(n for n, m in inner.named_modules() if isinstance(getattr(m, "modules_to_save", None), nn.ModuleDict))


model = peft.get_peft_model(build(), config)
# The selection: names match on dot boundaries (a list entry matches a name equal to it or ending in '.' + entry).
WANT_WRAPPED = {wrapped!r}
WANT_COPIED = {copied!r}
wrapped, copied = wrapped_modules(model), copied_modules(model)
assert wrapped == WANT_WRAPPED, (
    f"target_modules={{config.target_modules!r}} should wrap exactly {{WANT_WRAPPED}}; peft wrapped {{wrapped}}"
)
assert copied == WANT_COPIED, (
    f"modules_to_save={{config.modules_to_save!r}} should copy exactly {{WANT_COPIED}}; peft copied {{copied}}"
)
'''

_MERGE = """
# Merging: each merged weight is W + s * B @ A (s from the config), and the merged output equals the unmerged one.
SCALING = {scaling!r}  # module -> s = lora_alpha / r (or / sqrt(r) with use_rslora), per rank/alpha patterns
REL, FLOOR = {rel!r}, {floor!r}  # the allowed drift for DTYPE, relative to the largest magnitude
MERGES = {merges}  # merging an adapter that is already merged must apply nothing
inner = model.base_model.model
before = {{p: inner.get_submodule(p).get_base_layer().weight.detach().double().clone() for p in WANT_WRAPPED}}
with torch.no_grad():
    out = model(x)
for _ in range(MERGES):
    model.merge_adapter()
for path in WANT_WRAPPED:
    layer = inner.get_submodule(path)
    a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
    delta = (b.flatten(1) @ a.flatten(1)).reshape(before[path].shape) if a.dim() > 2 else b @ a
    want = before[path] + SCALING[path] * delta
    got = layer.get_base_layer().weight.detach().double()
    allowed = REL * want.abs().max().item() + FLOOR
    diff = (got - want).abs().max().item()
    assert diff <= allowed, f"merged weight of {{path!r}} is off W + s*B@A by {{diff:.3g}} (allowed {{allowed:.3g}})"
with torch.no_grad():
    merged = model(x)
diff, allowed = (merged - out).abs().max().item(), REL * out.abs().max().item() * len(WANT_WRAPPED) + FLOOR
assert diff <= allowed, f"merged output differs from the unmerged output by {{diff:.3g}} (allowed {{allowed:.3g}})"
"""

_ROUNDTRIP = """
# Save then load: the file holds exactly the format's keys, and loading restores every tensor and the output.
WANT_KEYS = {keys!r}
with torch.no_grad():
    out = model(x)
state = {{k: v.detach().clone() for k, v in peft.get_peft_model_state_dict(model).items()}}
with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    from safetensors.torch import load_file

    saved = sorted(load_file(directory + "/adapter_model.safetensors"))
    assert saved == WANT_KEYS, (
        f"the saved adapter holds unexpected keys {{sorted(set(saved) - set(WANT_KEYS))}}, "
        f"lacks {{sorted(set(WANT_KEYS) - set(saved))}}"
    )
    loaded = peft.PeftModel.from_pretrained(build(), directory)
again = peft.get_peft_model_state_dict(loaded)
for key, tensor in state.items():
    assert key in again and torch.equal(again[key], tensor), f"{{key}} differs after save and load"
with torch.no_grad():
    assert torch.equal(loaded(x), out), "the output after save and load differs from the output before"
"""

_TRAINING = """
# Loading for continued training makes exactly the adapter's parameters trainable; for inference, none.
WANT_TRAINABLE = {trainable!r}
with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    training = peft.PeftModel.from_pretrained(build(), directory, is_trainable=True)
    frozen = peft.PeftModel.from_pretrained(build(), directory, is_trainable=False)
got = sorted(n for n, p in training.base_model.model.named_parameters() if p.requires_grad)
assert got == WANT_TRAINABLE, (
    f"after from_pretrained(is_trainable=True) these train: unexpected {{sorted(set(got) - set(WANT_TRAINABLE))}}, "
    f"missing {{sorted(set(WANT_TRAINABLE) - set(got))}}"
)
still = sorted(n for n, p in frozen.base_model.model.named_parameters() if p.requires_grad)
assert not still, f"after from_pretrained(is_trainable=False) these still train: {{still}}"
"""

_EPILOGUE = """
print("no failure: this peft release keeps the promise on this example")
"""


def standalone_script(
    version: str, peft_kwargs: dict[str, Any], invariant: str, promise: str, scenario: Any
) -> str | None:
    """The script for `invariant` on a drawn `scenario` (duck-typed: model.spec.leaves, config, dtype, seed), or
    None where loraguard has no standalone form of it (the loraguard replay is written instead)."""
    from loraguard.reference import LoraModel

    spec = getattr(scenario.model, "spec", None)
    if spec is None or scenario.device != "cpu" or scenario.dtype not in (torch.float32, torch.bfloat16):
        return None
    if getattr(spec, "embedding", None) is not None:  # the script's tree is leaves only
        return None
    config: LoraConfig = scenario.config
    try:
        ref = LoraModel(scenario.base(), config, "default")
    except ValueError:
        return None
    wrapped = sorted(ref.lora_layers())
    fields = {
        "version": version,
        "what": f"{invariant} on a {len(spec.leaves)}-leaf model",
        "invariant": invariant,
        "promise": promise,
        "leaves": list(spec.leaves),
        "dtype": str(scenario.dtype),
        "seed": scenario.seed,
        "config": peft_kwargs,
        "wrapped": wrapped,
        "copied": sorted(ref.saved_modules()),
    }
    parts = [_PROLOGUE.format(**fields)]
    tol = tolerance(scenario.dtype)
    if invariant in ("merge-forward", "merge-unmerge"):
        scaling = {p: config.scaling_for(p) for p in wrapped}
        merges = 2 if invariant == "merge-unmerge" else 1
        parts.append(_MERGE.format(scaling=scaling, rel=tol.rel, floor=tol.floor, merges=merges))
    elif invariant == "roundtrip":
        parts.append(_ROUNDTRIP.format(keys=sorted(ref.adapter_state_dict("default"))))
    elif invariant == "continue-training":
        parts.append(_TRAINING.format(trainable=sorted(ref.adapter_parameters("default"))))
    parts.append(_EPILOGUE)
    return "".join(parts)
