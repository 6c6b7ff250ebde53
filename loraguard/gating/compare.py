"""Compare the installed release against a snapshot: load every recorded adapter, run it on the recorded inputs,
and save the same scenario anew; every difference becomes a `Drift` with readable lines, or is accepted."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file

from loraguard.backends.base import Backend
from loraguard.core.config import CONFIG_NAME
from loraguard.core.progress import steps
from loraguard.core.tolerance import bound, max_diff
from loraguard.gating.accepted import Acceptance, read_accepted
from loraguard.gating.layout import (
    ACCEPTED,
    ADAPTER_DIR,
    BASE_FILE,
    OUTPUT_MODES,
    Manifest,
    ScenarioRecord,
    read_manifest,
)
from loraguard.gating.snapshot import base_model, outputs, read_outputs, rebuild, saved_keys
from loraguard.harness.scenarios import needed_capabilities

if TYPE_CHECKING:
    import torch

#: Config fields that differ between releases by definition, never by behaviour.
VOLATILE_FIELDS = {"peft_version": "the release that wrote the file"}
_SHOWN = 8  # lines listed per kind of change before "... and N more"


@dataclass
class Drift:
    """One kind of difference in one scenario, as lines a reviewer reads; `accepted` once accepted.txt covers it."""

    kind: str
    lines: list[str]
    accepted: Acceptance | None = None


@dataclass
class ScenarioReport:
    id: str
    drifts: list[Drift] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # informational: largest differences, fields added

    @property
    def failing(self) -> list[Drift]:
        return [d for d in self.drifts if d.accepted is None]

    @property
    def status(self) -> str:
        return "drift" if self.failing else "accepted" if self.drifts else "ok"


@dataclass
class Comparison:
    """A whole comparison: the snapshot's origin, this environment, and one report per recorded scenario."""

    snapshot: Path
    manifest: Manifest
    backend: str
    version: str
    scenarios: list[ScenarioReport]
    unused: list[Acceptance]

    @property
    def failed(self) -> bool:
        return any(r.failing for r in self.scenarios)


def compare_snapshot(backend: Backend, directory: Path) -> Comparison:
    """Compare every scenario of the snapshot with `backend`; raises SnapshotError if the snapshot is unusable and
    ValueError if accepted.txt is malformed."""
    manifest = read_manifest(directory)
    accepted = read_accepted(directory / ACCEPTED)
    reports = []
    with steps(f"compare {backend.name}", len(manifest.scenarios)) as step:
        for record in manifest.scenarios:
            step(record.id)
            reports.append(compare_scenario(backend, directory, record, accepted))
    used = {d.accepted for r in reports for d in r.drifts if d.accepted is not None}
    unused = [a for a in accepted if a not in used]
    return Comparison(directory, manifest, backend.name, backend.version(), reports, unused)


def compare_scenario(
    backend: Backend, directory: Path, record: ScenarioRecord, accepted: list[Acceptance]
) -> ScenarioReport:
    """Every check for one recorded scenario, each drift matched against the acceptances."""
    report = ScenarioReport(record.id)
    report.drifts = _drifts(backend, directory, record, report.notes)
    for drift in report.drifts:
        drift.accepted = next((a for a in accepted if a.covers(record.id, drift.kind)), None)
    return report


def _drifts(backend: Backend, directory: Path, record: ScenarioRecord, notes: list[str]) -> list[Drift]:
    scenario = rebuild(record)
    missing = sorted(needed_capabilities(scenario) - set(backend.capabilities))
    if missing:
        return [
            Drift(
                "load",
                [
                    f"backend {backend.name!r} {backend.version()} lacks {', '.join(missing)}, which the "
                    "recorded release had"
                ],
            )
        ]
    params = load_file(str(directory / record.folder / BASE_FILE))
    try:
        base = base_model(scenario, params)
    except ValueError as err:
        return [Drift("base", [str(err)])]
    drifts = []
    try:
        model = backend.load(base, directory / record.folder / ADAPTER_DIR)
        inputs, old = read_outputs(directory, record)
        new = outputs(backend, model, inputs)
    except Exception as err:  # any failure of the release under test is a finding to report, not a crash
        drifts.append(Drift("load", [f"{type(err).__name__}: {err}"]))
    else:
        drifts += _output_drifts(old, new, scenario.dtype, notes)
    try:
        fresh = backend.wrap(base_model(scenario, params), scenario.config)
        with tempfile.TemporaryDirectory(prefix="loraguard-compare-") as tmp:
            backend.save(fresh, Path(tmp))
            keys, config = saved_keys(Path(tmp)), json.loads((Path(tmp) / CONFIG_NAME).read_text())
    except Exception as err:  # as above: the release's failure is the finding
        drifts.append(Drift("save", [f"{type(err).__name__}: {err}"]))
    else:
        drifts += key_drifts(record.keys, keys) + config_drifts(record.adapter_config, config, notes)
    return drifts


def _output_drifts(old: dict, new: dict, dtype: torch.dtype, notes: list[str]) -> list[Drift]:
    """Outputs against the recorded ones within the dtype's bound at depth 1: the same computation, recorded and
    repeated, not two orderings through every layer (a depth-scaled bfloat16 bound let a missed reload of two
    LoRA layers, 0.31 on outputs of 4.7, pass as rounding)."""
    by_kind: dict[str, list[str]] = {}
    for mode in OUTPUT_MODES:
        kind = "base" if mode == "disabled" else "outputs"
        if new[mode].shape != old[mode].shape:
            by_kind.setdefault(kind, []).append(
                f"{mode}: shape {tuple(new[mode].shape)}, recorded {tuple(old[mode].shape)}"
            )
            continue
        diff, allowed = max_diff(new[mode].to(old[mode].dtype), old[mode]), bound(old[mode], dtype)
        notes.append(f"{mode}: max |difference| {diff:.3g} (bound {allowed:.3g})")
        if diff > allowed:
            by_kind.setdefault(kind, []).append(
                f"{mode}: max |difference| {diff:.3g} exceeds the {dtype} bound {allowed:.3g}"
            )
    return [Drift(kind, lines) for kind, lines in by_kind.items()]


def _describe(info: dict) -> str:
    return f"{tuple(info['shape'])} {info['dtype']}"


def key_drifts(old: dict[str, dict], new: dict[str, dict]) -> list[Drift]:
    """Keys that appeared, vanished or changed shape or dtype between the recorded save and the new one."""
    appeared, vanished = sorted(set(new) - set(old)), sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    if not (appeared or vanished or changed):
        return []
    lines = [f"{len(appeared)} appeared, {len(vanished)} vanished, {len(changed)} changed shape or dtype"]
    lines += _capped([f"+ {k}  {_describe(new[k])}" for k in appeared])
    lines += _capped([f"- {k}  {_describe(old[k])}" for k in vanished])
    lines += _capped([f"~ {k}  {_describe(old[k])} -> {_describe(new[k])}" for k in changed])
    return [Drift("keys", lines)]


def _normal(value: object) -> object:
    """Lists of names are sets to peft (their saved order varies between runs): compare them sorted."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sorted(value)
    return value


def config_drifts(old: dict, new: dict, notes: list[str]) -> list[Drift]:
    """Fields written differently or no longer written; fields new in this release (or dropped nulls) are notes."""
    fields = (set(old) | set(new)) - set(VOLATILE_FIELDS)
    changed = sorted(f for f in fields & set(old) & set(new) if _normal(old[f]) != _normal(new[f]))
    dropped = sorted(f for f in fields & set(old) - set(new) if old[f] is not None)
    added = sorted(fields & set(new) - set(old))
    if added:
        notes.append(f"config fields new in this release: {', '.join(f'{f}={new[f]!r}' for f in added)}")
    unset = sorted(f for f in fields & set(old) - set(new) if old[f] is None)
    if unset:
        notes.append(f"config fields no longer written, all recorded as null: {', '.join(unset)}")
    lines = [f"~ {f}: {old[f]!r} -> {new[f]!r}" for f in changed] + [
        f"- {f}: {old[f]!r} (no longer written)" for f in dropped
    ]
    return [Drift("config", lines)] if lines else []


def _capped(lines: list[str]) -> list[str]:
    return lines if len(lines) <= _SHOWN else lines[:_SHOWN] + [f"  ... and {len(lines) - _SHOWN} more"]
