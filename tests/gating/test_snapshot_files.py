"""A snapshot that is missing, partial, edited or of another format version is refused, naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from loraguard.backends.reference import ReferenceBackend
from loraguard.gating.compare import compare_snapshot
from loraguard.gating.layout import ADAPTER_DIR, IO_FILE, MANIFEST, SnapshotError, read_manifest
from loraguard.gating.snapshot import take_snapshot
from loraguard.harness.zoo import available
from loraguard.harness.zoo_scenarios import zoo_scenarios


def _rewrite_manifest(snapshot: Path, **changes) -> None:
    data = json.loads((snapshot / MANIFEST).read_text())
    data.update(changes)
    (snapshot / MANIFEST).write_text(json.dumps(data))


def test_a_missing_manifest_means_an_incomplete_snapshot(snapshot: Path) -> None:
    (snapshot / MANIFEST).unlink()
    with pytest.raises(SnapshotError, match=r"manifest\.json: missing; the snapshot is incomplete"):
        compare_snapshot(ReferenceBackend(), snapshot)


def test_a_missing_file_names_the_file_and_its_scenario(snapshot: Path) -> None:
    (snapshot / "embedding-r4-f32" / IO_FILE).unlink()
    with pytest.raises(
        SnapshotError,
        match=r"embedding-r4-f32/io\.safetensors: listed in manifest\.json for "
        r"scenario 'embedding-r4-f32' but missing",
    ):
        read_manifest(snapshot)


def test_an_edited_file_fails_its_checksum(snapshot: Path) -> None:
    weights = snapshot / "mlp-r4-f32" / ADAPTER_DIR / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match=r"adapter_model\.safetensors: checksum differs"):
        read_manifest(snapshot)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "format version 99; this loraguard reads version 1"),
        ({"format": "something-else"}, "not a loraguard snapshot manifest"),
        ({"scenarios": [{"id": "x"}]}, "malformed manifest"),
    ],
)
def test_a_foreign_or_newer_manifest_is_refused(snapshot: Path, changes: dict, message: str) -> None:
    _rewrite_manifest(snapshot, **changes)
    with pytest.raises(SnapshotError, match=message):
        read_manifest(snapshot)


def test_a_snapshot_is_replaced_only_with_force_and_keeps_accepted_txt(snapshot: Path) -> None:
    scenarios = zoo_scenarios(available(["mlp"]), [torch.float32])
    with pytest.raises(SnapshotError, match="a snapshot is already there; pass --force"):
        take_snapshot(ReferenceBackend(), scenarios, snapshot)
    (snapshot / "accepted.txt").write_text("mlp-r4-f32: keys  # reviewed\n")
    manifest = take_snapshot(ReferenceBackend(), scenarios, snapshot, force=True)
    assert [r.id for r in manifest.scenarios] == ["mlp-r4-f32"]
    assert sorted(p.name for p in snapshot.iterdir()) == ["accepted.txt", MANIFEST, "mlp-r4-f32"]


def test_a_directory_that_is_not_a_snapshot_is_never_cleared(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SnapshotError, match="is not a loraguard snapshot"):
        take_snapshot(ReferenceBackend(), zoo_scenarios(available(["mlp"]), [torch.float32]), tmp_path, force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
