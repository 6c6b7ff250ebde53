"""Snapshot with the reference, compare with the reference and with mutants: the comparison must see a changed key
format and a changed scaling, stay silent on an unchanged backend, and let accepted drift pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from loraguard.backends.reference import ReferenceBackend
from loraguard.core.tolerance import EFFECT_MARGIN, bound, max_diff
from loraguard.gating.compare import compare_snapshot, config_drifts
from loraguard.gating.layout import FORMAT_VERSION, IO_FILE, MANIFEST, read_manifest
from loraguard.gating.report import render_text
from tests.gating.conftest import ZOO
from tests.gating.mutants import ScalingReadDifferently
from tests.mutants import AdapterNameInKeys

IDS = [f"{name}-r4-f32" for name in ZOO]


def test_the_snapshot_records_adapters_keys_config_outputs_and_environment(reference_snapshot: Path) -> None:
    manifest = read_manifest(reference_snapshot)
    assert [r.id for r in manifest.scenarios] == IDS and not manifest.skipped
    assert {"torch", "python", "library"} <= set(manifest.environment)
    assert json.loads((reference_snapshot / MANIFEST).read_text())["format_version"] == FORMAT_VERSION
    for record in manifest.scenarios:
        assert any(k.endswith("lora_B.weight") or k.endswith("lora_embedding_B") for k in record.keys), record.keys
        assert record.adapter_config["r"] == 4 and record.adapter_config["lora_alpha"] == 16
        io = load_file(str(reference_snapshot / record.id / IO_FILE))
        # the adapter's effect is real, so "outputs unchanged" means something
        assert max_diff(io["unmerged"], io["disabled"]) > EFFECT_MARGIN * bound(io["disabled"], io["disabled"].dtype)


def test_an_unchanged_backend_shows_no_drift(reference_snapshot: Path) -> None:
    comparison = compare_snapshot(ReferenceBackend(), reference_snapshot)
    assert not comparison.failed, render_text(comparison)
    assert [r.status for r in comparison.scenarios] == ["ok"] * len(IDS)
    assert all(any(n.startswith("unmerged: max |difference|") for n in r.notes) for r in comparison.scenarios)


def test_a_changed_key_format_is_drift_listing_the_keys(reference_snapshot: Path) -> None:
    comparison = compare_snapshot(AdapterNameInKeys(), reference_snapshot)
    assert comparison.failed
    mlp = comparison.scenarios[0]
    assert [d.kind for d in mlp.drifts] == ["keys"]  # old adapters still load and compute the same outputs
    lines = mlp.drifts[0].lines
    assert "+ base_model.model.fc1.lora_A.default.weight  (4, 8) float32" in lines
    assert "- base_model.model.fc1.lora_A.weight  (4, 8) float32" in lines
    assert "+ base_model.model.head.modules_to_save.default.weight  (4, 16) float32" in lines
    assert lines[0] == "6 appeared, 6 vanished, 0 changed shape or dtype"  # 2 LoRA layers x (A, B) + head's 2
    assert "mlp-r4-f32: DRIFT (keys)" in render_text(comparison)


def test_a_changed_scaling_is_output_drift_with_the_largest_difference(reference_snapshot: Path) -> None:
    comparison = compare_snapshot(ScalingReadDifferently(), reference_snapshot)
    assert comparison.failed
    for report in comparison.scenarios:
        assert [d.kind for d in report.drifts] == ["outputs"], report.drifts  # keys, config and base unchanged
        text = "\n".join(report.drifts[0].lines)
        assert "unmerged: max |difference|" in text and "merged: max |difference|" in text
        assert "exceeds the torch.float32 bound" in text


def test_accepted_drift_passes_and_other_kinds_still_fail(snapshot: Path) -> None:
    (snapshot / "accepted.txt").write_text(
        "# reviewed on the upgrade\n"
        "*-r4-f32: outputs  # we moved to rsLoRA scaling on purpose\n"
        "mlp-r4-f32: keys  # stale: the key format did not change\n"
    )
    comparison = compare_snapshot(ScalingReadDifferently(), snapshot)
    assert not comparison.failed, render_text(comparison)
    assert {r.status for r in comparison.scenarios} == {"accepted"}
    assert [a.line for a in comparison.unused] == [3]
    assert "matches no drift any more" in render_text(comparison)

    (snapshot / "accepted.txt").write_text("*: keys  # renamed keys are fine for us\n")
    assert compare_snapshot(ScalingReadDifferently(), snapshot).failed


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("mlp-r4-f32: outputs", "give the reason after '#'"),
        ("mlp-r4-f32: weights  # why", "unknown drift kind 'weights'"),
        ("mlp-r4-f32 outputs  # why", "expected 'scenario: kind  # reason'"),
    ],
)
def test_a_malformed_acceptance_names_the_file_and_line(snapshot: Path, line: str, problem: str) -> None:
    (snapshot / "accepted.txt").write_text(f"# header\n{line}\n")
    with pytest.raises(ValueError, match="accepted.txt:2: ") as err:
        compare_snapshot(ReferenceBackend(), snapshot)
    assert problem in str(err.value)


def test_config_fields_compare_as_sets_and_ignore_the_writer_version() -> None:
    notes: list[str] = []
    old = {
        "target_modules": ["fc1", "fc2"],
        "peft_version": "0.10.0",
        "r": 4,
        "layers_pattern": None,
        "use_dora": False,
    }
    new = {"target_modules": ["fc2", "fc1"], "peft_version": "0.21.2", "r": 8, "lora_bias": False}
    (drift,) = config_drifts(old, new, notes)
    assert drift.lines == ["~ r: 4 -> 8", "- use_dora: False (no longer written)"]
    assert notes == [
        "config fields new in this release: lora_bias=False",
        "config fields no longer written, all recorded as null: layers_pattern",
    ]
