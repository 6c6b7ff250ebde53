"""Strict save and load of reference adapters in peft's on-disk format.

Loading refuses, by key and file, anything peft would silently skip: a missing, unexpected or wrongly
shaped tensor, or a key that still carries an adapter name (``lora_A.default.weight``, ``default.default``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from loraguard.core.config import CONFIG_NAME, LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, LoraConfig
from loraguard.core.keys import embedded_adapter_name, parse_saved_key

if TYPE_CHECKING:
    from loraguard.reference.model import LoraModel


class AdapterLoadError(ValueError):
    """A saved adapter that does not fit the model; the message names the file and the key."""


def read_config(directory: Path) -> LoraConfig:
    """The adapter's config, with a clear error if the directory is not an adapter."""
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: not a directory; expected an adapter folder with {CONFIG_NAME}")
    return LoraConfig.load(directory)


def read_weights(directory: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """Load `adapter_model.safetensors`; a pickle-only adapter is refused, never unpickled."""
    path = directory / WEIGHTS_NAME
    if not path.exists():
        legacy = directory / LEGACY_WEIGHTS_NAME
        hint = (
            (
                f" It has {LEGACY_WEIGHTS_NAME}, a pickle: inspect it with `loraguard audit {directory}` and "
                "convert it to safetensors if you trust it."
            )
            if legacy.exists()
            else ""
        )
        raise FileNotFoundError(f"{path}: missing.{hint}")
    return path, load_file(str(path))


def save_adapter(model: LoraModel, directory: Path, adapter_name: str) -> None:
    """Write `adapter_config.json` and `adapter_model.safetensors` for one adapter."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    for k, v in model.adapter_state_dict(adapter_name).items():  # a tied tensor (BERT's decoder bias) is copied,
        tensors[k] = v.clone() if v.data_ptr() in seen else v.contiguous()  # as peft saves it under both keys
        seen.add(v.data_ptr())
    for key, tensor in tensors.items():
        if tensor.numel() == 0:
            raise ValueError(
                f"{key} has no elements (shape {tuple(tensor.shape)}): the parameter is sharded or un-gathered "
                "(DeepSpeed ZeRO-3); save inside deepspeed.zero.GatheredParameters"
            )
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    model.peft_config[adapter_name].save(directory)


def load_adapter(
    model: LoraModel, directory: Path, adapter_name: str, is_trainable: bool, created: bool = False
) -> None:
    """Load a saved adapter into `model` as `adapter_name` (adding it unless `created`), strictly.

    On any error the adapter is removed again, so the model is left as it was.
    """
    config = read_config(directory)
    wrapped_before = set(model.lora_layers()) | set(model.saved_modules()) | set(model.token_layers())
    if not created:
        model.add_adapter(adapter_name, config)
    try:
        path, tensors = read_weights(directory)
        _copy_into(model, path, tensors, adapter_name)
    except BaseException:
        if created:
            raise
        model.delete_adapter(adapter_name)
        _unwrap_new(model, wrapped_before)
        raise
    _set_trainable_after_load(model, adapter_name, is_trainable)


def _unwrap_new(model: LoraModel, wrapped_before: set[str]) -> None:
    """Put back the plain modules that a failed load wrapped, so the model's structure is as before."""
    layers = model.lora_layers()
    inner = {id(layer.base_layer) for layer in layers.values()}  # nested parameter wrappers go with the outer
    for path, layer in layers.items():
        if path not in wrapped_before and id(layer) not in inner:
            model._replace(path, layer.unwrapped())
    for path, wrapper in model.saved_modules().items():
        if path not in wrapped_before:
            model._replace(path, wrapper.original_module)
    for path, tokens in model.token_layers().items():
        if path not in wrapped_before:
            model._replace(path, tokens.base_layer)


def _copy_into(model: LoraModel, path: Path, tensors: dict[str, torch.Tensor], adapter_name: str) -> None:
    lora_paths, saved_paths, token_paths = set(model.lora_layers()), set(model.saved_modules()), model.token_layers()
    expected = {k.saved(): k for k in model.adapter_keys(adapter_name)}
    state = model.model.state_dict(keep_vars=True)
    for key, tensor in tensors.items():
        try:  # a key the config creates is taken as it is (a plain module's bias under bias='all' among them)
            parsed = expected[key] if key in expected else parse_saved_key(key, lora_paths, saved_paths, token_paths)
        except KeyError as err:
            embedded = embedded_adapter_name(key)
            hint = (
                (
                    f" It has an {embedded}: peft writes keys without the adapter name, so the file was saved or "
                    "renamed wrongly; drop the adapter name from the key and load again."
                )
                if embedded
                else ""
            )
            raise AdapterLoadError(f"{path}: unexpected key: {err.args[0]}.{hint}") from None
        if key not in expected:
            raise AdapterLoadError(f"{path}: unexpected key '{key}': the adapter config does not create it")
        target = state[parsed.in_model(adapter_name)]
        if target.shape != tensor.shape:
            raise AdapterLoadError(
                f"{path}: key '{key}' has shape {tuple(tensor.shape)} but the model expects {tuple(target.shape)}"
                + (" (zero-size: an un-gathered ZeRO-3 save)" if tensor.numel() == 0 else "")
            )
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise AdapterLoadError(f"{path}: missing {len(missing)} key(s) the config requires, e.g. '{missing[0]}'")
    with torch.no_grad():
        for key, tensor in tensors.items():
            state[expected[key].in_model(adapter_name)].copy_(tensor)


def _set_trainable_after_load(model: LoraModel, adapter_name: str, is_trainable: bool) -> None:
    """Inference: nothing trainable and eval mode (dropout off), as peft. Continued training: exactly this
    adapter's parameters."""
    for p in model.model.parameters():
        p.requires_grad_(False)
    if is_trainable:
        for p in model.adapter_parameters(adapter_name).values():
            p.requires_grad_(True)
    else:
        model.eval()
