"""`take_snapshot`: what one release of a library does with a fixed set of adapters, written to a directory.

Per scenario: the adapter as the backend saves it, its key set and config fields, the base model's parameters,
and outputs unmerged, merged and disabled on fixed inputs. The manifest records the environment.
"""

from __future__ import annotations

import json
import platform
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from loraguard.backends.base import Backend, Unsupported
from loraguard.core.config import CONFIG_NAME, LoraConfig
from loraguard.core.progress import steps
from loraguard.gating.layout import (
    ADAPTER_DIR,
    BASE_FILE,
    IO_FILE,
    MANIFEST,
    Manifest,
    ScenarioRecord,
    SnapshotError,
    sha256,
    write_manifest,
)
from loraguard.harness.scenarios import DTYPES, Scenario, needed_capabilities
from loraguard.harness.settings import load_model
from loraguard.harness.zoo import ZOO, run
from loraguard.invariants.steps import perturb, read_saved

_DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def environment(backend: Backend) -> dict[str, str]:
    """Versions that decide what the snapshot holds: the library under test, torch, python, transformers."""
    env = {
        "backend": backend.name,
        "library": backend.version(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    for dist in ("transformers", "loraguard"):
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return env


def rebuild(record: ScenarioRecord) -> Scenario:
    """The scenario a record describes: its model (zoo or user factory), config, dtype and seed."""
    if record.model_origin:
        model = load_model(record.model_origin, f"scenario {record.id!r}: the model recorded with --model")
    elif record.model in ZOO:
        model = ZOO[record.model]
    else:
        raise SnapshotError(
            f"scenario {record.id!r}: model {record.model!r} is neither in the zoo nor a user model "
            "with a recorded module:factory"
        )
    config = LoraConfig.from_json_dict(record.config, f"manifest scenario {record.id!r}")
    return Scenario(model, config, None, DTYPES[record.dtype], "cpu", record.seed)


def base_model(scenario: Scenario, params: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A fresh base model; with `params` (a snapshot's base.safetensors) its parameters are set to exactly those."""
    model = scenario.base()
    if params is not None:
        load_base_params(model, params)
    return model


def load_base_params(model: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy recorded parameters in by name; raise ValueError naming any parameter that does not line up."""
    covered = set()
    with torch.no_grad():
        for name, value in params.items():
            try:
                param = model.get_parameter(name)
            except AttributeError:
                raise ValueError(
                    f"the base model has no parameter {name!r} any more (renamed by a new release of its library?)"
                ) from None
            if param.shape != value.shape:
                raise ValueError(
                    f"base parameter {name!r} has shape {tuple(param.shape)}, recorded {tuple(value.shape)}"
                )
            param.copy_(value)
            covered.add(id(param))
    new = sorted(n for n, p in model.named_parameters() if id(p) not in covered)
    if new:
        raise ValueError(f"the base model has parameters the snapshot does not: {new[:5]}")


def saved_keys(adapter_dir: Path) -> dict[str, dict[str, object]]:
    """Saved key -> shape and dtype, from adapter_model.safetensors."""
    return {
        k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")}
        for k, v in sorted(read_saved(adapter_dir).items())
    }


def outputs(backend: Backend, model: nn.Module, inputs: tuple) -> dict[str, torch.Tensor]:
    """Outputs unmerged, with adapters disabled, then merged (the merge is the last step: it changes the model)."""
    with torch.no_grad():
        out = {"unmerged": run(model, inputs)}
        with backend.disabled(model):
            out["disabled"] = run(model, inputs)
        backend.merge(model)
        out["merged"] = run(model, inputs)
    return {k: v.detach().contiguous() for k, v in out.items()}


def record_scenario(backend: Backend, scenario: Scenario, directory: Path, origin: str | None) -> ScenarioRecord:
    """Build, train a little (deterministically), save and run one scenario; write its files under directory/<id>."""
    folder = directory / scenario.id
    folder.mkdir(parents=True)
    base = base_model(scenario)
    params = {n: p.detach().clone().contiguous() for n, p in base.named_parameters()}
    save_file(params, str(folder / BASE_FILE))
    inputs = scenario.inputs()
    model = backend.wrap(base, scenario.config)
    perturb(backend, model, "default", seed=scenario.seed + 1)
    backend.save(model, folder / ADAPTER_DIR)
    io = {f"input.{i}": t.contiguous() for i, t in enumerate(inputs)}
    io.update(outputs(backend, model, inputs))
    save_file(io, str(folder / IO_FILE))
    files = {str(p.relative_to(directory)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    return ScenarioRecord(
        id=scenario.id,
        model=scenario.model.name,
        model_origin=origin,
        dtype=_DTYPE_NAMES[scenario.dtype],
        seed=scenario.seed,
        config=scenario.config.to_json_dict(),
        keys=saved_keys(folder / ADAPTER_DIR),
        adapter_config=json.loads((folder / ADAPTER_DIR / CONFIG_NAME).read_text()),
        files=files,
    )


def take_snapshot(
    backend: Backend,
    scenarios: list[Scenario],
    directory: Path,
    origins: dict[str, str] | None = None,
    force: bool = False,
) -> Manifest:
    """Record every scenario the backend can run into `directory`; `origins` maps user model names to module:factory.

    An existing snapshot is replaced only with `force` (its accepted.txt and other files of yours are kept).
    Baselines record LoRA adapters: scenarios of peft's other tuners are left out.
    """
    scenarios = [s for s in scenarios if s.tuner is None]
    ids = [s.id for s in scenarios]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SnapshotError(f"scenario ids {duplicates} occur twice (a user model named like a zoo model?); rename it")
    clear(directory, force)
    directory.mkdir(parents=True, exist_ok=True)
    records, skipped = [], {}
    with steps(f"snapshot {backend.name}", len(scenarios)) as step:
        for scenario in scenarios:
            step(scenario.id)
            missing = sorted(needed_capabilities(scenario) - set(backend.capabilities))
            if missing:
                skipped[scenario.id] = f"backend {backend.name!r} {backend.version()} lacks {', '.join(missing)}"
                continue
            try:
                origin = (origins or {}).get(scenario.model.name)
                records.append(record_scenario(backend, scenario, directory, origin))
            except Unsupported as why:
                shutil.rmtree(directory / scenario.id, ignore_errors=True)
                skipped[scenario.id] = str(why)
    created = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = Manifest(backend.name, backend.version(), environment(backend), created, records, skipped)
    write_manifest(directory, manifest)
    return manifest


def clear(directory: Path, force: bool) -> None:
    """Make room for a new snapshot: refuse to overwrite without `force`, and never delete what is not ours."""
    if not directory.exists() or not any(directory.iterdir()):
        return
    ours = [p for p in directory.iterdir() if p.is_dir() and ((p / IO_FILE).exists() or (p / ADAPTER_DIR).is_dir())]
    manifest = directory / MANIFEST
    if not manifest.exists() and not ours:
        raise SnapshotError(f"{directory}: exists and is not a loraguard snapshot; choose an empty or new directory")
    if not force:
        raise SnapshotError(
            f"{directory}: a snapshot is already there; pass --force (or --loraguard-update-baseline) to regenerate it"
        )
    for folder in ours:
        shutil.rmtree(folder)
    manifest.unlink(missing_ok=True)


def read_outputs(directory: Path, record: ScenarioRecord) -> tuple[tuple, dict[str, torch.Tensor]]:
    """A recorded scenario's inputs and outputs."""
    io = load_file(str(directory / record.folder / IO_FILE))
    inputs = tuple(io[f"input.{i}"] for i in range(sum(k.startswith("input.") for k in io)))
    return inputs, {k: v for k, v in io.items() if not k.startswith("input.")}
