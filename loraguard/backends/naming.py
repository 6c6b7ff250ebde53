"""The one canonical parameter naming backends report in, and the helper that translates a library's names to it.

Canonical names are peft's in-model names, relative to the *base* model (never a wrapper's prefix):

========================================  ===========================================================
``<path>.lora_A.<adapter>.weight``        LoRA factor A of `adapter` on the module at `path` (B alike)
``<path>.lora_B.<adapter>.bias``          lora_B's bias (``lora_bias=True``)
``<path>.lora_embedding_A.<adapter>``     factor A on an ``nn.Embedding`` (B alike)
``<path>.lora_magnitude_vector.<adapter>.weight``  DoRA's magnitude
``<path>.base_layer.weight``              the adapted layer's own weight (``.bias`` alike)
``<path>.modules_to_save.<adapter>.<p>``  parameter `p` of `adapter`'s modules_to_save copy
``<name>``                                any other parameter, under its name in the base model
========================================  ===========================================================

A library names these its own way (torchtune: ``fc.lora_a.weight``; AdapterHub: ``fc.loras.default.lora_A``;
loralib: ``fc.lora_A``). A backend describes, per adapted module, how its parameter names below that module map
to canonical roles, and `translate_names` does the rest, so the translation is written once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from loraguard.core.keys import AdapterKey

#: A library's name for a parameter below an adapted module -> canonical role, e.g. ``{"lora_a.weight":
#: "lora_A.weight", "loras.{adapter}.lora_B": "lora_B.weight", "weight": "base_layer.weight"}``. ``{adapter}``
#: in a pattern matches the adapter name; a pattern without it belongs to `default_adapter`.
Roles = Mapping[str, str]

TORCH_BASE = {"weight": "base_layer.weight", "bias": "base_layer.bias"}


def _compile(pattern: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in pattern.split("{adapter}")]
    return re.compile(r"(?P<adapter>[^.]+)".join(parts) + r"\Z")


def canonical_name(path: str, role: str, adapter: str) -> str:
    """The canonical name of `role` (``lora_A.weight``, ``base_layer.bias``...) of `adapter` at module `path`."""
    head, _, param = role.partition(".")
    if head in ("base_layer",):
        return f"{path}.{role}"
    return AdapterKey(path, head, param).in_model(adapter)


def translate_names(
    names: Iterable[str],
    layers: Mapping[str, Roles],
    default_adapter: str = "default",
    strip: str = "",
) -> set[str]:
    """Canonical names for a library's parameter names (`strip`: a wrapper prefix to remove first).

    `layers` maps each adapted module's path (in the base model) to its `Roles`. A name below an adapted module
    that no role matches is an error naming it, so a library change cannot silently drop a parameter.
    """
    compiled = {path: [(_compile(lib), role) for lib, role in roles.items()] for path, roles in layers.items()}
    out = set()
    for name in names:
        if strip and name.startswith(strip):
            name = name[len(strip) :]
        path = next((p for p in _prefixes(name) if p in compiled), None)
        if path is None:
            out.add(name)
            continue
        rest = name[len(path) + 1 :]
        for pattern, role in compiled[path]:
            hit = pattern.match(rest)
            if hit:
                out.add(canonical_name(path, role, hit.groupdict().get("adapter") or default_adapter))
                break
        else:
            raise ValueError(f"parameter {name!r}: no canonical role for {rest!r} below adapted module {path!r}")
    return out


def _prefixes(name: str) -> list[str]:
    """Module paths a parameter name lies below, longest first (``a.b.w`` -> ``a.b``, ``a``)."""
    segs = name.split(".")
    return [".".join(segs[:i]) for i in range(len(segs) - 1, 0, -1)]
