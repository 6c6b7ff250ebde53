"""Mixed training export: base weights trained together with an unmerged LoRA export to a merged model that
computes the same outputs, and the export leaves the training model untouched."""

from __future__ import annotations

import copy

import torch

from loraguard.backends.base import Backend
from loraguard.harness.scenarios import Scenario
from loraguard.harness.zoo import run
from loraguard.invariants.checks import assert_close, assert_equal, expect
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import train_step, wrap


def export_merged(backend: Backend, model: torch.nn.Module) -> torch.nn.Module:
    """The single-process export: merge a copy, never the training model itself."""
    return backend.merge_and_unload(copy.deepcopy(model))


@invariant(
    "mixed-export",
    "After training base weights and an unmerged LoRA together, the exported merged model "
    "equals the trained model's output, and the training model is left untouched (unmerged, same device).",
)
def mixed_training_export(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    for path in wrapped.targets:  # train the base weights too, as full fine-tunes with LoRA on top do
        backend.base_weight(wrapped.model, path).requires_grad_(True)
    for _ in range(2):
        train_step(wrapped.model, wrapped.inputs, lr=0.05)
    trained_out = wrapped.out()
    params = {n: (p.detach().clone(), p.device) for n, p in wrapped.model.named_parameters()}
    exported = export_merged(backend, wrapped.model)
    with torch.no_grad():
        assert_close(
            run(exported, wrapped.inputs),
            trained_out,
            scenario.dtype,
            "exported merged model vs trained model",
            len(wrapped.targets),
        )
    for name, p in wrapped.model.named_parameters():
        value, device = params[name]
        expect(p.device == device, f"export moved training parameter {name} from {device} to {p.device}")
        assert_equal(p.detach(), value, f"training parameter {name} after export")
    assert_equal(wrapped.out(), trained_out, "training model output after export (it must stay unmerged)")
