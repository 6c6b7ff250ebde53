"""The invariants that need no oracle, in the form that runs on peft's other tuners (LoHa, LoKr, IA3, OFT...).

loraguard's reference implements LoRA only, so for a `TunerConfig` scenario these compare the backend with
itself across operations: merged against unmerged, after against before, loaded against saved, one adapter
against another. Targets and modules_to_save are predicted from the base model's names (core.matching).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import torch
from torch import nn

from loraguard.backends.base import Backend, TunerBackend
from loraguard.core.config import CONFIG_NAME
from loraguard.core.matching import spec_matches
from loraguard.core.tuners import TunerConfig
from loraguard.harness.scenarios import OTHER, Scenario
from loraguard.harness.zoo import run
from loraguard.invariants.checks import (
    assert_close,
    assert_effect,
    assert_equal,
    assert_same_keys,
    assert_state_equal,
    expect,
)
from loraguard.invariants.dtypes import check_dtypes_kept
from loraguard.invariants.registry import oracle_free
from loraguard.invariants.steps import read_saved, scratch_dir


@dataclass
class TunerWrapped:
    """A scenario's model wrapped with its tuner, with the base output and target weights from before."""

    model: nn.Module
    inputs: tuple
    base_out: torch.Tensor
    base_weights: dict[str, torch.Tensor]

    def out(self) -> torch.Tensor:
        with torch.no_grad():
            return run(self.model, self.inputs)


def selected(base: nn.Module, spec: list[str] | str | None, leaves: bool = True) -> set[str]:
    """Module paths `spec` selects (dot boundaries; a string is a fullmatch regex); `leaves`: weighted layers only."""
    if not spec:
        return set()
    return {
        n
        for n, m in base.named_modules()
        if n and spec_matches(n, spec) and (not leaves or isinstance(getattr(m, "weight", None), torch.Tensor))
    }


def wrap_tuner(backend: Backend, scenario: Scenario) -> TunerWrapped:
    """Wrap the scenario's base with its tuner and check the adapted layers are exactly the selected ones."""
    tuner = _tuner(scenario)
    base, x = scenario.base(), scenario.inputs()
    targets = selected(base, tuner.target_modules)
    with torch.no_grad():
        base_out = run(base, x)
    w0 = {p: cast(torch.Tensor, base.get_submodule(p).weight).detach().clone() for p in targets}
    model = _tb(backend).wrap(base, tuner)
    got = _tb(backend).adapted_paths(model, "default")
    expect(
        got == targets,
        f"{tuner.kind}: adapted modules differ from target_modules={tuner.target_modules!r}: unexpected "
        f"{sorted(got - targets)}, missing {sorted(targets - got)}",
    )
    return TunerWrapped(model, x, base_out, w0)


def snapshot(backend: Backend, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """Clones of every tensor of `adapter`, by saved key."""
    return {k: v.detach().clone() for k, v in _tb(backend).adapter_tensors(model, adapter).items()}


def perturb_tuner(backend: Backend, model: nn.Module, adapter: str, seed: int = 1) -> None:
    """Simulated training of one adapter: change each of its tensors in place."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in _tb(backend).adapter_tensors(model, adapter).values():
            t.add_((torch.randn(t.shape, generator=gen) * 0.05).to(t.device, t.dtype))


def _tb(backend: Backend) -> TunerBackend:
    """The backend as a tuner backend: it declared the scenario's tuner kind (the registry checked)."""
    return cast(TunerBackend, backend)


def _tuner(scenario: Scenario) -> TunerConfig:
    expect(scenario.tuner is not None, f"scenario {scenario.id} has no tuner")
    return cast(TunerConfig, scenario.tuner)  # not None: expect raised otherwise


@oracle_free("merge-forward")
def tuner_merge_forward(backend: Backend, scenario: Scenario) -> None:
    """Merged output equals the unmerged forward, and the merge changed every adapted weight."""
    wrapped = wrap_tuner(backend, scenario)
    out = wrapped.out()
    assert_effect(out, wrapped.base_out, scenario.dtype, f"{_tuner(scenario).kind} output vs base output")
    backend.merge(wrapped.model)
    for path, w0 in wrapped.base_weights.items():
        expect(not torch.equal(backend.base_weight(wrapped.model, path), w0), f"merge left '{path}' unchanged")
    depth = len(wrapped.base_weights)
    assert_close(wrapped.out(), out, scenario.dtype, "merged output vs unmerged output", depth)


@oracle_free("merge-unmerge")
def tuner_unmerge_restores(backend: Backend, scenario: Scenario) -> None:
    """Disabling gives the base output; a second merge changes nothing; unmerge restores W and the output."""
    wrapped = wrap_tuner(backend, scenario)
    out = wrapped.out()
    assert_effect(out, wrapped.base_out, scenario.dtype, f"{_tuner(scenario).kind} output vs base output")
    if "disable" in backend.capabilities:
        with backend.disabled(wrapped.model):
            assert_equal(wrapped.out(), wrapped.base_out, "output with adapters disabled vs base output")
    backend.merge(wrapped.model)
    merged = {p: backend.base_weight(wrapped.model, p).detach().clone() for p in wrapped.base_weights}
    backend.merge(wrapped.model)
    for path, once in merged.items():
        assert_equal(backend.base_weight(wrapped.model, path), once, f"weight of '{path}' merged twice vs once")
    backend.unmerge(wrapped.model)
    for path, w0 in wrapped.base_weights.items():
        got = backend.base_weight(wrapped.model, path)
        assert_close(got, w0, scenario.dtype, f"weight of '{path}' after unmerge vs the original", via=merged[path])
    depth = len(wrapped.base_weights)
    assert_close(wrapped.out(), out, scenario.dtype, "output after merge+unmerge vs before", depth)


def check_saved_config(directory: Path, tuner: TunerConfig) -> None:
    """adapter_config.json names the tuner and keeps its targets, modules_to_save and every configured field."""
    saved = json.loads((directory / CONFIG_NAME).read_text())
    expect(
        str(saved.get("peft_type", "")).lower() == tuner.kind,
        f"adapter_config.json: peft_type {saved.get('peft_type')!r} for a {tuner.kind} adapter",
    )
    as_set = lambda v: set(v) if isinstance(v, (list, tuple)) else v
    fields = {"target_modules": tuner.target_modules, "modules_to_save": tuner.modules_to_save, **tuner.options}
    for name, want in fields.items():
        got = saved.get(name)
        expect(
            as_set(got) == as_set(want) or (not got and not want),
            f"adapter_config.json field '{name}': saved {got!r}, configured {want!r}",
        )


@oracle_free("roundtrip")
def tuner_roundtrip(backend: Backend, scenario: Scenario) -> None:
    """Save then load: exactly the adapter's tensors saved bit for bit without its name, config fields kept, same
    tensors, outputs and merged weights after load."""
    wrapped = wrap_tuner(backend, scenario)
    before = snapshot(backend, wrapped.model, "default")
    out = wrapped.out()
    with scratch_dir() as d:
        backend.save(wrapped.model, d)
        saved = read_saved(d)
        named = sorted(k for k in saved if "default" in k.split("."))
        expect(not named, f"saved keys carry the adapter name 'default': {named[:3]}")
        assert_state_equal(saved, before, "saved tensors vs the model's")
        check_saved_config(d, _tuner(scenario))
        loaded = backend.load(scenario.base(), d)
    assert_state_equal(snapshot(backend, loaded, "default"), before, "tensors after load")
    with torch.no_grad():
        assert_equal(run(loaded, wrapped.inputs), out, "output after load vs before save")
    backend.merge(wrapped.model)
    backend.merge(loaded)
    for path in wrapped.base_weights:
        assert_equal(
            backend.base_weight(loaded, path),
            backend.base_weight(wrapped.model, path),
            f"merged weight of '{path}' after load vs before save",
        )


@oracle_free("isolation")
def tuner_isolation(backend: Backend, scenario: Scenario) -> None:
    """Adding, training, switching and deleting a second adapter of the same tuner leaves the first bit-identical;
    each adapter saves exactly its own tensors."""
    wrapped = wrap_tuner(backend, scenario)
    first = snapshot(backend, wrapped.model, "default")
    out = wrapped.out()

    def unchanged(after: str) -> None:
        assert_state_equal(snapshot(backend, wrapped.model, "default"), first, f"adapter 'default' after {after}")
        assert_equal(wrapped.out(), out, f"output of adapter 'default' after {after}")

    _tb(backend).add_adapter(wrapped.model, OTHER, cast(TunerConfig, scenario.tuner_second))
    unchanged(f"adding adapter '{OTHER}'")
    backend.set_adapter(wrapped.model, [OTHER])
    perturb_tuner(backend, wrapped.model, OTHER)
    other = snapshot(backend, wrapped.model, OTHER)
    backend.set_adapter(wrapped.model, ["default"])
    unchanged(f"training adapter '{OTHER}' and switching back")
    with scratch_dir() as d:
        backend.save(wrapped.model, d)
        for name, where, want in (("default", d, first), (OTHER, d / OTHER, other)):
            assert_same_keys(read_saved(where), want, f"keys saved for adapter '{name}'")
    if "delete_adapter" in backend.capabilities:
        _tb(backend).delete_adapter(wrapped.model, OTHER)
        unchanged(f"deleting adapter '{OTHER}'")


@oracle_free("dtype")
def tuner_dtype(backend: Backend, scenario: Scenario) -> None:
    """Outputs finite in the model's dtype; merge, unmerge and merge_and_unload keep every base weight's dtype."""
    check_dtypes_kept(backend, scenario, wrap_tuner(backend, scenario))


@oracle_free("naming")
def tuner_naming(backend: Backend, scenario: Scenario) -> None:
    """target_modules and modules_to_save select exactly the modules whose names match on dot boundaries."""
    wrapped = wrap_tuner(backend, scenario)  # checks the adapted layers
    want = selected(scenario.base(), _tuner(scenario).modules_to_save, leaves=False)
    got = set(backend.saved_copies(wrapped.model, "default"))
    expect(
        got == want,
        f"modules_to_save={_tuner(scenario).modules_to_save!r} wrapped {sorted(got)}, expected {sorted(want)}",
    )
