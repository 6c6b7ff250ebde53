"""The snapshot's on-disk layout (format version 1): manifest.json, one folder per scenario, integrity checks.

Every file a scenario owns is listed in the manifest with its SHA-256, so a partial or edited snapshot is
refused with the name of the file, never half-compared.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "loraguard-snapshot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ACCEPTED = "accepted.txt"
ADAPTER_DIR = "adapter"
BASE_FILE = "base.safetensors"  # the base model's parameters, so a changed initialisation cannot look like drift
IO_FILE = "io.safetensors"  # inputs (input.0, input.1...) and outputs (unmerged, merged, disabled)
OUTPUT_MODES = ("unmerged", "merged", "disabled")


class SnapshotError(ValueError):
    """A snapshot that cannot be used (missing, partial, corrupt, or another format version); names the file."""


@dataclass
class ScenarioRecord:
    """What a snapshot holds about one scenario: how to rebuild it, and what the recorded release saved."""

    id: str
    model: str
    model_origin: str | None  # "module:factory" for a user model, None for the built-in zoo
    dtype: str
    seed: int
    config: dict[str, Any]  # loraguard's LoraConfig, as JSON
    keys: dict[str, dict[str, Any]]  # saved key -> {"shape": [...], "dtype": "float32"}
    adapter_config: dict[str, Any]  # the adapter_config.json the release wrote
    files: dict[str, str] = field(default_factory=dict)  # path relative to the snapshot -> sha256

    @property
    def folder(self) -> str:
        return self.id


@dataclass
class Manifest:
    """The snapshot's table of contents: who took it, in which environment, and every scenario it holds."""

    backend: str
    library_version: str
    environment: dict[str, str]
    created: str
    scenarios: list[ScenarioRecord]
    skipped: dict[str, str] = field(default_factory=dict)  # scenario id -> why the recorded release could not run it

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": self.created,
            "backend": self.backend,
            "library_version": self.library_version,
            "environment": self.environment,
            "scenarios": [vars(r) for r in self.scenarios],
            "skipped": self.skipped,
        }


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    """Write manifest.json last, so a snapshot interrupted halfway has none and is refused as incomplete."""
    path = directory / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_manifest(directory: Path) -> Manifest:
    """Read and verify a snapshot: format version, every field, every listed file present with its checksum."""
    path = directory / MANIFEST
    if not directory.is_dir():
        raise SnapshotError(
            f"{directory}: no such snapshot directory; create one with `loraguard snapshot --out {directory}`"
        )
    if not path.is_file():
        raise SnapshotError(
            f"{path}: missing; the snapshot is incomplete (interrupted?). Take it again with "
            f"`loraguard snapshot --out {directory} --force`"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SnapshotError(f"{path}: not valid JSON ({err}); take the snapshot again with --force") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SnapshotError(f'{path}: not a loraguard snapshot manifest (no "format": "{FORMAT}")')
    if data.get("format_version") != FORMAT_VERSION:
        raise SnapshotError(
            f"{path}: format version {data.get('format_version')!r}; this loraguard reads version "
            f"{FORMAT_VERSION}. Take the snapshot again with this loraguard (--force)"
        )
    try:
        records = [ScenarioRecord(**r) for r in data["scenarios"]]
        manifest = Manifest(
            data["backend"],
            data["library_version"],
            data["environment"],
            data["created"],
            records,
            data.get("skipped", {}),
        )
    except (KeyError, TypeError) as err:
        raise SnapshotError(f"{path}: malformed manifest ({type(err).__name__}: {err})") from None
    for record in records:
        for rel, digest in record.files.items():
            file = directory / rel
            if not file.is_file():
                raise SnapshotError(
                    f"{file}: listed in {MANIFEST} for scenario {record.id!r} but missing; the snapshot "
                    "is partial. Restore it from version control or take it again with --force"
                )
            if sha256(file) != digest:
                raise SnapshotError(
                    f"{file}: checksum differs from {MANIFEST}; the file is corrupt or was edited. "
                    "Restore it from version control or take the snapshot again with --force"
                )
    return manifest
