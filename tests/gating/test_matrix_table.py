"""The release matrix's reading of JUnit XML, its table and its first-change detection, on recorded inputs.

data/junit-peft-0.14.0-ci.xml is the report of `pytest --loraguard --loraguard-backend peft --loraguard-profile ci
--junitxml` on peft 0.14.0, with failure texts cut to their first line. data/matrix-results.json is the
results.json of the `loraguard matrix` run shown in docs/gating.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loraguard.frontends.cli import main
from loraguard.gating import matrix_table
from loraguard.gating.environments import release
from loraguard.gating.matrix import ReleaseResult, load_results, read_junit

DATA = Path(__file__).parent / "data"


def test_junit_outcomes_are_grouped_by_the_invariant_the_plugin_tagged() -> None:
    outcomes, failures = read_junit(DATA / "junit-peft-0.14.0-ci.xml")
    assert outcomes["isolation"] == {"passed": 6, "failed": 5, "skipped": 2}
    assert "test_isolation[peft-llama-r4-f32]" in failures["isolation"]  # the modules_to_save leak (seed bug 1)
    assert failures["naming"] == ["test_naming[peft-nested-r4-f32]", "test_naming[peft-nested-r4-bf16]"]
    assert outcomes["merge-unmerge"] == {"passed": 11, "skipped": 2} and "merge-unmerge" not in failures
    assert outcomes["zero3-save-gathered"] == {"skipped": 1}


def _result(release: str, **outcomes: dict[str, int]) -> ReleaseResult:
    failures = {inv: [f"test_{inv}[{i}]" for i in range(c.get("failed", 0))] for inv, c in outcomes.items()}
    return ReleaseResult(release, {"peft": release}, dict(outcomes), {k: v for k, v in failures.items() if v})


def test_first_change_is_the_first_release_whose_outcome_or_failing_tests_differ() -> None:
    results = [
        _result("0.10.0", leak={"passed": 3}, suffix={"failed": 1, "passed": 3}, partial={"failed": 2}),
        _result("0.13.0", leak={"passed": 3}, suffix={"failed": 1, "passed": 3}, partial={"failed": 1, "passed": 1}),
        ReleaseResult("0.13.5", error="peft 0.13.5: install failed"),
        _result("0.14.0", leak={"passed": 2, "failed": 1}, suffix={"failed": 1, "passed": 3}),
        _result("0.15.0", leak={"passed": 3}, suffix={"failed": 1, "passed": 3}),
    ]
    by_name = {row.name: row for row in matrix_table.rows(results)}
    releases = [r.release for r in results]
    assert by_name["leak"].cells == ["pass 3", "pass 3", "error", "FAIL 1/3", "pass 3"]
    assert by_name["leak"].changes(releases)[1:] == [("0.14.0", "error", "FAIL 1/3"), ("0.15.0", "FAIL 1/3", "pass 3")]
    assert by_name["partial"].first_change(releases) == "0.13.0: FAIL 2/2 -> FAIL 1/2"
    assert by_name["partial"].cells[-1] == "-"  # not run there: no change is claimed from it
    assert by_name["suffix"].first_change(releases) == "0.13.5: FAIL 1/4 -> error"


def test_the_baseline_row_counts_scenarios_that_drifted() -> None:
    def compared(release: str, *statuses: str) -> ReleaseResult:
        scenarios = [
            {
                "id": f"s{i}",
                "status": s,
                "drifts": [{"kind": "keys", "accepted": "ok" if s == "accepted" else None}] if s != "ok" else [],
            }
            for i, s in enumerate(statuses)
        ]
        return ReleaseResult(release, outcomes={}, baseline={"failed": "drift" in statuses, "scenarios": scenarios})

    results = [compared("0.10.0", "ok", "ok"), compared("0.12.0", "ok", "drift"), compared("0.13.0", "accepted", "ok")]
    (row,) = matrix_table.rows(results)
    assert (row.name, row.cells) == ("baseline", ["same", "DRIFT 1/2", "accepted"])
    assert row.first_change(["0.10.0", "0.12.0", "0.13.0"]) == "0.12.0: same -> DRIFT 1/2"


def test_recorded_matrix_renders_every_format(capsys: pytest.CaptureFixture[str]) -> None:
    results = load_results(DATA / "matrix-results.json")
    text = matrix_table.render_text(results)
    assert text.splitlines()[0].split() == ["invariant", *[r.release for r in results], "first", "change"]
    assert main(["matrix", "--from-results", str(DATA / "matrix-results.json"), "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| invariant | " + " | ".join(r.release for r in results))
    assert main(["matrix", "--from-results", str(DATA / "matrix-results.json"), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["releases"] == [r.release for r in results]
    assert {row["invariant"] for row in report["rows"]} >= {"naming", "isolation", "baseline"}


def test_companion_pins_follow_the_release_and_can_be_overridden() -> None:
    assert release("0.10.0").requirements == ["peft==0.10.0", "transformers==4.46.3"]
    assert release("0.14.0").companions == ("transformers==4.47.1",)
    assert release("0.21.2").companions == ("transformers",)
    assert release("0.14.0", {"0.14.0": ["transformers==4.48.3"]}).companions == ("transformers==4.48.3",)


def test_companion_pins_never_go_back_and_keep_what_old_peft_patches_on_seq2seq_models() -> None:
    """Each pin is a transformers no older than the previous release's; peft up to 0.20 patches
    `_prepare_encoder_decoder_kwargs_for_generation` on seq2seq models, which transformers 5.18 removed (peft 0.20.0
    with the newest transformers fails every bart-seq2seq test): those releases get one from before 5.18."""
    from packaging.version import Version

    from loraguard.gating.environments import COMPANIONS

    pinned = [Version(pin.partition("==")[2]) for _, pin, _ in COMPANIONS if "==" in pin]
    assert pinned == sorted(pinned)
    for version in ("0.8.2", "0.17.1", "0.19.0", "0.19.1", "0.20.0"):
        _, eq, pin = release(version).companions[0].partition("==")
        assert eq and Version(pin) < Version("5.18"), f"peft {version} gets {release(version).companions}"
    assert release("0.20.0").companions == ("transformers==5.14.1",)
    assert release("0.21.0").companions == ("transformers",)


def test_a_results_file_from_elsewhere_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text('{"not": "a list"}')
    assert main(["matrix", "--from-results", str(tmp_path / "results.json")]) == 2
    assert "not a results file written by `loraguard matrix`" in capsys.readouterr().err


def test_the_page_plots_every_release_and_invariant_and_marks_each_first_change(tmp_path: Path) -> None:
    """The HTML page of the recorded matrix: one cell per (invariant, release), the first change framed, no
    asset fetched from anywhere (it must open offline, e.g. as a CI artifact)."""
    from html.parser import HTMLParser

    from loraguard.gating.matrix_page import COLOURS

    page = tmp_path / "matrix.html"
    assert main(["matrix", "--from-results", str(DATA / "matrix-results.json"), "--html", str(page)]) == 0
    html = page.read_text()
    results = load_results(DATA / "matrix-results.json")
    releases = [r.release for r in results]
    table = matrix_table.rows(results)

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.rects: list[dict[str, str | None]] = []
            self.links: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "rect":
                self.rects.append(found)
            self.links += [v or "" for k, v in attrs if k in ("src", "href")]

    cells = Cells()
    cells.feed(html)
    filled = [r for r in cells.rects if r.get("class") != "first-change"]
    framed = [r for r in cells.rects if r.get("class") == "first-change"]
    assert len(filled) == len(table) * len(releases)
    assert len(framed) == sum(1 for row in table if row.changes(releases))
    assert {r["fill"] for r in filled} <= {colour for colour, _ in COLOURS.values()}
    changed = next(row for row in table if row.name == "baseline")
    where, _, now = changed.changes(releases)[0]
    assert f"baseline on {where}: {now} (first change)" in html
    assert cells.links == [] and "<script" not in html and "url(" not in html
