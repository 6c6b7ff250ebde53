"""`pytest --loraguard --loraguard-baseline DIR`: one test per recorded scenario, in the summary table."""

from __future__ import annotations

from pathlib import Path

import pytest

# As in tests/plugin: import what the plugin imports up front, so pytester's in-process runs find it loaded.
import loraguard.gating.compare  # noqa: F401
import loraguard.harness.settings  # noqa: F401
import loraguard.run.in_pytest  # noqa: F401
import tests.gating.mutants  # noqa: F401
from loraguard.gating.layout import read_manifest

RUN = ["-p", "no:cacheprovider", "--loraguard", "--loraguard-profile", "quick", "-k", "test_baseline"]
REFERENCE = [*RUN, "--loraguard-backend", "reference"]
NEW_RELEASE = [*RUN, "--loraguard-backend", "tests.gating.mutants:ScalingReadDifferently"]


def test_without_a_baseline_the_test_is_skipped_with_how_to_configure(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*REFERENCE, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no baseline configured: pass --loraguard-baseline DIR*"])


def test_each_recorded_scenario_is_a_test_in_the_summary(pytester: pytest.Pytester, reference_snapshot: Path) -> None:
    result = pytester.runpytest(*REFERENCE, "-v", f"--loraguard-baseline={reference_snapshot}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        ["*test_baseline[[]nested-r4-f32-reference[]] PASSED*", "*loraguard summary*", "baseline*3 passed*"]
    )


def test_update_then_drift_fails_with_the_diff_until_accepted(pytester: pytest.Pytester, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline"
    options = ["--loraguard-zoo", "mlp", "--loraguard-dtype", "f32", f"--loraguard-baseline={baseline}"]
    pytester.runpytest(*REFERENCE, *options, "--loraguard-update-baseline").assert_outcomes(passed=1)
    assert [r.id for r in read_manifest(baseline).scenarios] == ["mlp-r4-f32", "mlp-dora-f32"]

    drifted = pytester.runpytest(*NEW_RELEASE, *options)
    drifted.assert_outcomes(failed=2)
    drifted.stdout.fnmatch_lines(
        [
            "*drift against reference *",
            "mlp-r4-f32: DRIFT (outputs)",
            "  outputs [[]not accepted[]]:",
            "    unmerged: max |difference| * exceeds *",
        ]
    )

    accepted = "".join(f"{s}: outputs  # rsLoRA scaling adopted on purpose\n" for s in ("mlp-r4-f32", "mlp-dora-f32"))
    (baseline / "accepted.txt").write_text(accepted)
    pytester.runpytest(*NEW_RELEASE, *options).assert_outcomes(passed=2)


def test_an_edited_baseline_stops_the_run_naming_the_file(pytester: pytest.Pytester, snapshot: Path) -> None:
    config = snapshot / "mlp-r4-f32" / "adapter" / "adapter_config.json"
    config.write_text(config.read_text().replace('"lora_alpha": 16', '"lora_alpha": 32'))
    result = pytester.runpytest(*REFERENCE, f"--loraguard-baseline={snapshot}")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*mlp-r4-f32/adapter/adapter_config.json: checksum differs from manifest.json*"])


def test_update_without_a_directory_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*REFERENCE, "--loraguard-update-baseline")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*--loraguard-update-baseline needs --loraguard-baseline DIR*"])
