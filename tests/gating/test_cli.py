"""`loraguard snapshot` and `loraguard compare` as a CI job runs them: exit codes, messages, formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraguard.frontends.cli import main
from loraguard.harness.zoo import ZOO, ZooModel

REFERENCE = ["--backend", "reference"]


def user_model() -> ZooModel:
    """A user's model, given to the commands as module:factory (here, an mlp under another name)."""
    mlp = ZOO["mlp"]
    return ZooModel("my-mlp", mlp.build, mlp.inputs, ["fc2"], [])


def _snapshot(out: Path, *extra: str) -> int:
    return main(["snapshot", "--out", str(out), *REFERENCE, "--dtype", "f32", *extra])


def test_snapshot_then_compare_with_a_user_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _snapshot(tmp_path / "b", "--model", f"{__name__}:user_model", "--zoo", "none") == 0  # only the user's
    assert "recorded 1 scenarios with reference" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "b"), *REFERENCE, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] is False and [s["id"] for s in report["scenarios"]] == ["my-mlp-r4-f32"]


def test_snapshot_refuses_to_overwrite_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _snapshot(tmp_path / "b", "--zoo", "mlp") == 0
    assert _snapshot(tmp_path / "b", "--zoo", "mlp") == 2
    assert "pass --force" in capsys.readouterr().err
    assert _snapshot(tmp_path / "b", "--zoo", "mlp", "--force") == 0


def test_compare_exits_1_on_drift_with_a_readable_diff(snapshot: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compare", str(snapshot), "--backend", "tests.gating.mutants:ScalingReadDifferently"])
    out = capsys.readouterr().out
    assert code == 1
    assert "mlp-r4-f32: DRIFT (outputs)" in out and "FAIL: drift not accepted" in out
    assert (
        main(
            [
                "compare",
                str(snapshot),
                "--backend",
                "tests.gating.mutants:ScalingReadDifferently",
                "--format",
                "markdown",
            ]
        )
        == 1
    )
    assert "| mlp-r4-f32 | drift | **outputs** |" in capsys.readouterr().out


def test_compare_exits_2_on_an_unusable_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path / "nothing"), *REFERENCE]) == 2
    assert "no such snapshot directory; create one with `loraguard snapshot" in capsys.readouterr().err
