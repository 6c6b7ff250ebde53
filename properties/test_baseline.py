"""Upgrade gating: the installed release against a baseline from `loraguard snapshot` (docs/gating.md).

One test per recorded scenario, failing with the scenario's diff unless DIR/accepted.txt accepts the drift.
``--loraguard-update-baseline`` rewrites the baseline from this run's settings instead, as pytest-regressions does.
"""

import pytest

from loraguard.frontends.plugin import SETTINGS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lg_baseline_scenario" not in metafunc.fixturenames:
        return
    settings = metafunc.config.stash.get(SETTINGS, None)
    if settings is not None and settings.update_baseline and settings.baseline is None:
        raise pytest.UsageError(
            "loraguard: --loraguard-update-baseline needs --loraguard-baseline DIR (where to write)"
        )
    if settings is None or settings.baseline is None:
        why = "no baseline configured: pass --loraguard-baseline DIR (take one with `loraguard snapshot`)"
        metafunc.parametrize("lg_baseline_scenario", [pytest.param(None, marks=pytest.mark.skip(reason=why))])
    elif settings.update_baseline:
        metafunc.parametrize("lg_baseline_scenario", ["update"])
    else:
        from loraguard.gating.layout import SnapshotError, read_manifest

        try:
            ids = [r.id for r in read_manifest(settings.baseline).scenarios]
        except SnapshotError as err:
            raise pytest.UsageError(f"loraguard --loraguard-baseline: {err}") from None
        metafunc.parametrize("lg_baseline_scenario", ids)


@pytest.mark.loraguard("baseline")
def test_baseline(lg_backend, lg_settings, lg_baseline_scenario):
    from loraguard.gating.accepted import read_accepted
    from loraguard.gating.compare import compare_scenario
    from loraguard.gating.layout import ACCEPTED, read_manifest
    from loraguard.gating.report import scenario_lines
    from loraguard.gating.snapshot import take_snapshot

    directory = lg_settings.baseline
    if lg_settings.update_baseline:
        if len(lg_settings.backends) > 1:
            pytest.fail("--loraguard-update-baseline records one backend: choose it with --loraguard-backend")
        take_snapshot(lg_backend, lg_settings.scenarios, directory, lg_settings.model_origins, force=True)
        return
    manifest = read_manifest(directory)
    if manifest.backend != lg_backend.name:
        pytest.skip(f"the baseline records backend {manifest.backend!r}, not {lg_backend.name!r}")
    record = next(r for r in manifest.scenarios if r.id == lg_baseline_scenario)
    report = compare_scenario(lg_backend, directory, record, read_accepted(directory / ACCEPTED))
    if report.failing:
        header = f"drift against {manifest.backend} {manifest.library_version} (baseline {directory}):"
        pytest.fail("\n".join([header, *scenario_lines(report)]), pytrace=False)
