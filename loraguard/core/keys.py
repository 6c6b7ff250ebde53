"""peft's on-disk key format, in one place: how an adapter tensor is named in `adapter_model.safetensors`.

Keys are split on dots and compared segment by segment; nothing here uses substring tests, so a module
called ``lora_A_proj`` or ``default`` can never be mistaken for part of the format.

A saved key is ``base_model.model.<module path>.<role>[.<param>]`` where the role is a LoRA factor
(``lora_A.weight``, ``lora_embedding_A``...), and a `modules_to_save` copy is saved under the wrapped
module's own path (``base_model.model.head.weight``). The adapter name never appears in a saved key.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

PEFT_PREFIX = "base_model.model."

#: DoRA's magnitude vector: saved bare (``...lora_magnitude_vector``), held in the model at ``.<adapter>.weight``.
MAGNITUDE = "lora_magnitude_vector"
#: Roles whose tensors are LoRA factors (saved with an optional ``.weight``/``.bias`` after them).
FACTOR_ROLES = frozenset({"lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"})
#: Roles that are parameter containers without a trailing ``.weight`` (peft's ParameterDicts).
BARE_ROLES = frozenset({"lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector"})
#: Module names that exist only inside a LoRA-wrapped layer; automatic targeting must never pick them.
LORA_INTERNAL_SEGMENTS = FACTOR_ROLES | {"lora_dropout", "base_layer", "modules_to_save", "original_module"}
#: Role of a `modules_to_save` copy's tensor, and of a trained base-layer bias (peft's ``bias="all"``).
MODULES_TO_SAVE = "modules_to_save"
BASE_BIAS = "base_bias"
#: Role of trainable tokens' row values (``trainable_token_indices``), saved bare under the embedding's path.
TOKENS = "token_adapter.trainable_tokens_delta"
#: Role of a bias trained with ``bias="all"`` on a module LoRA does not wrap: saved and held as ``<module>.bias``.
MODULE_BIAS = "module_bias"

_TENSOR_PARAMS = ("weight", "bias")
_ADAPTER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class AdapterKey:
    """One saved tensor, by structure: which module, what role, which parameter of it."""

    module: str
    role: str
    param: str = ""

    def saved(self) -> str:
        """The key peft writes for this tensor (adapter name stripped)."""
        if self.role in BARE_ROLES or self.role == TOKENS:
            parts = [self.module, self.role]
        elif self.role in FACTOR_ROLES:
            parts = [self.module, self.role, self.param or "weight"]
        elif self.role == BASE_BIAS:
            parts = [self.module, "base_layer", "bias"]
        elif self.role == MODULE_BIAS:
            parts = [self.module, "bias"]
        else:  # modules_to_save: the copy is saved under the original module's own path
            parts = [self.module, self.param]
        return PEFT_PREFIX + ".".join(p for p in parts if p)

    def in_model(self, adapter: str) -> str:
        """The key of this tensor inside a peft-structured model's state dict (adapter name inserted)."""
        if self.role == MAGNITUDE:
            return f"{self.module}.{self.role}.{adapter}.weight"
        if self.role in BARE_ROLES or self.role == TOKENS:
            return f"{self.module}.{self.role}.{adapter}"
        if self.role in FACTOR_ROLES:
            return f"{self.module}.{self.role}.{adapter}.{self.param or 'weight'}"
        if self.role == BASE_BIAS:
            return f"{self.module}.base_layer.bias"
        if self.role == MODULE_BIAS:
            return f"{self.module}.bias" if self.module else "bias"
        return f"{self.module}.{MODULES_TO_SAVE}.{adapter}.{self.param}"


def split(key: str) -> list[str]:
    """Dotted name to segments (the only way names are taken apart in loraguard)."""
    return key.split(".") if key else []


def strip_prefix(key: str) -> str:
    """Remove peft's ``base_model.model.`` prefix; a key without it is returned unchanged."""
    return key[len(PEFT_PREFIX) :] if key.startswith(PEFT_PREFIX) else key


def parse_factor_key(key: str) -> AdapterKey | None:
    """Parse a saved LoRA factor key, or return None if the key holds no factor role.

    The *last* factor-role segment decides, so a module path that itself contains ``lora_A`` stays intact.
    """
    segs = split(strip_prefix(key))
    for i in range(len(segs) - 1, -1, -1):
        if segs[i] in FACTOR_ROLES:
            rest = segs[i + 1 :]
            return AdapterKey(".".join(segs[:i]), segs[i], ".".join(rest))
    return None


def parse_saved_key(
    key: str, lora_modules: set[str], saved_modules: set[str], token_modules: Collection[str] = ()
) -> AdapterKey:
    """Parse a saved key against the model's structure; raise KeyError if it names nothing that exists.

    `lora_modules` are paths of LoRA-wrapped layers, `saved_modules` paths of `modules_to_save` wrappers,
    `token_modules` paths of embeddings with trainable tokens.
    """
    body = strip_prefix(key)
    for module in token_modules:
        if body == f"{module}.{TOKENS}":
            return AdapterKey(module, TOKENS)
    factor = parse_factor_key(key)
    if factor is not None and factor.module in lora_modules:
        wanted = "" if factor.role in BARE_ROLES else factor.param
        if factor.role in BARE_ROLES and factor.param == "":
            return factor
        if factor.role not in BARE_ROLES and wanted in _TENSOR_PARAMS:
            return factor
        raise KeyError(f"{key}: '{factor.param}' after '{factor.role}' is not part of the format")
    segs = split(body)
    for cut in range(len(segs) - 1, 0, -1):
        module, param = ".".join(segs[:cut]), ".".join(segs[cut:])
        if module in saved_modules:
            return AdapterKey(module, MODULES_TO_SAVE, param)
        if module in lora_modules and segs[cut:] == ["base_layer", "bias"]:
            return AdapterKey(module, BASE_BIAS, "bias")
    raise KeyError(f"{key}: no LoRA layer or modules_to_save module of the model has this key")


def embedded_adapter_name(
    key: str, adapter_names: Collection[str] = ("default",), known_modules: Collection[str] = ()
) -> str | None:
    """Describe an adapter name left inside a saved key (peft's load-mismatch bug), or None if the key is clean.

    Flags ``lora_A.<name>.weight``, ``lora_embedding_A.<name>``, ``modules_to_save.<name>`` and a doubled
    adapter name such as ``default.default`` (a doubled module name like ``base.base`` is a legitimate path, and so
    is any path in `known_modules`, the model's own module names when the caller knows them).
    """
    segs = split(strip_prefix(key))
    # Only the key's own role counts (the last one): a module path may itself contain a user's module named
    # `lora_A` or `modules_to_save`, as in ``lora_A.fc.lora_A.weight``.
    last = {seg: i for i, seg in enumerate(segs) if seg in FACTOR_ROLES or seg == MODULES_TO_SAVE}
    role_at = max(last.values(), default=None)
    for i, seg in enumerate(segs):
        nxt = segs[i + 1] if i + 1 < len(segs) else None
        if ".".join(segs[: i + 2]) in known_modules:  # `seg.nxt` lies on a module's own path (``fc.lora_A.fc``)
            continue
        if i == role_at and seg in FACTOR_ROLES and nxt is not None:
            allowed_after = () if seg in BARE_ROLES else _TENSOR_PARAMS
            if nxt not in allowed_after:
                return f"adapter name '{nxt}' after '{seg}'"
        if i == role_at and seg == MODULES_TO_SAVE and nxt is not None:
            return f"adapter name '{nxt}' after 'modules_to_save'"
        if seg == "trainable_tokens_delta" and i > 0 and segs[i - 1] == "token_adapter" and nxt is not None:
            return f"adapter name '{nxt}' after 'trainable_tokens_delta'"
        in_module_path = role_at is not None and i + 1 < role_at and ".".join(segs[:role_at]) in known_modules
        if nxt is not None and seg == nxt and seg in adapter_names and not in_module_path:
            return f"doubled segment '{seg}.{seg}'"
    return None


def check_adapter_name(name: str) -> None:
    """Refuse adapter names that would collide with the key format or module paths."""
    if not _ADAPTER_NAME.match(name) or name in LORA_INTERNAL_SEGMENTS or name in _TENSOR_PARAMS:
        raise ValueError(
            f"adapter name {name!r} is not usable: use letters, digits, '_' or '-', no dots, and none of "
            f"{sorted(LORA_INTERNAL_SEGMENTS | set(_TENSOR_PARAMS))}"
        )
