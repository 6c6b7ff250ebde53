"""The release x invariant table: a cell per release, and for each invariant the first release where it changes.

A change is a different outcome (pass, FAIL, skip, error) or, while failing, a different set of failing tests, so
a partial fix shows too. Built from `ReleaseResult`s only (no environments, no torch): tested on recorded results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loraguard.gating.matrix import ReleaseResult

BASELINE_ROW = "baseline"


@dataclass
class Row:
    """One invariant across releases: per release, what change detection compares and the text of the cell."""

    name: str
    states: list[tuple]
    cells: list[str]

    def changes(self, releases: list[str]) -> list[tuple[str, str, str]]:
        """(release, cell before, cell now) wherever the state differs from the last release that ran it."""
        out, last = [], None
        for release, state, cell in zip(releases, self.states, self.cells):
            if state[0] == "-":
                continue
            if last is not None and state != last[0]:
                out.append((release, last[1], cell))
            last = (state, cell)
        return out

    def first_change(self, releases: list[str]) -> str:
        changes = self.changes(releases)
        return f"{changes[0][0]}: {changes[0][1]} -> {changes[0][2]}" if changes else "-"


def invariant_state(result: ReleaseResult, invariant: str) -> tuple[tuple, str]:
    """(state, cell) of one invariant in one release: FAIL if any test failed, pass if any passed, else skip."""
    if result.error:
        return ("error",), "error"
    counts = result.outcomes.get(invariant)
    if not counts:
        return ("-",), "-"
    failed, passed = counts.get("failed", 0), counts.get("passed", 0)
    if failed:
        return ("FAIL", *sorted(result.failures.get(invariant, []))), f"FAIL {failed}/{failed + passed}"
    if passed:
        return ("pass",), f"pass {passed}"
    return ("skip",), "skip"


def baseline_state(result: ReleaseResult) -> tuple[tuple, str]:
    """(state, cell) of the baseline comparison in one release: same, accepted, DRIFT (with counts) or error."""
    report = result.baseline
    if result.error or report is None:
        return (("error",), "error") if result.error else (("-",), "-")
    if "error" in report:
        return ("error",), "error"
    drifted = sorted(f"{s['id']}:{d['kind']}" for s in report["scenarios"] for d in s["drifts"] if not d["accepted"])
    if report["failed"]:
        scenarios = sum(s["status"] == "drift" for s in report["scenarios"])
        return ("DRIFT", *drifted), f"DRIFT {scenarios}/{len(report['scenarios'])}"
    statuses = {s["status"] for s in report["scenarios"]}
    return (("accepted",), "accepted") if "accepted" in statuses else (("same",), "same")


def rows(results: list[ReleaseResult]) -> list[Row]:
    """One row per invariant seen in any release (sorted), then the baseline row if any release compared."""
    out = []
    for inv in sorted({inv for r in results for inv in r.outcomes}):
        pairs = [invariant_state(r, inv) for r in results]
        out.append(Row(inv, [s for s, _ in pairs], [c for _, c in pairs]))
    if any(r.baseline is not None for r in results):
        pairs = [baseline_state(r) for r in results]
        out.append(Row(BASELINE_ROW, [s for s, _ in pairs], [c for _, c in pairs]))
    return out


def _grid(results: list[ReleaseResult]) -> list[list[str]]:
    releases = [r.release for r in results]
    body = [[row.name, *row.cells, row.first_change(releases)] for row in rows(results)]
    return [["invariant", *releases, "first change"], *body]


def render_text(results: list[ReleaseResult]) -> str:
    grid = _grid(results)
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in grid]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines + _footnotes(results))


def render_markdown(results: list[ReleaseResult]) -> str:
    grid = _grid(results)
    lines = ["| " + " | ".join(grid[0]) + " |", "|" + " --- |" * len(grid[0])]
    lines += ["| " + " | ".join(r) + " |" for r in grid[1:]]
    return "\n".join(lines + _footnotes(results))


def _footnotes(results: list[ReleaseResult]) -> list[str]:
    notes = [
        f"{r.release}: peft {r.environment.get('peft', '?')}, transformers {r.environment.get('transformers', '?')}, "
        f"torch {r.environment.get('torch', '?')}"
        for r in results
        if r.environment
    ]
    notes += [f"{r.release}: ERROR {r.error.splitlines()[0]}" for r in results if r.error]
    return ["", *notes] if notes else []


def to_json(results: list[ReleaseResult]) -> dict[str, Any]:
    releases = [r.release for r in results]
    by_release = {r.release: r for r in results}
    return {
        "releases": releases,
        "environments": {r.release: r.environment for r in results},
        "errors": {r.release: r.error for r in results if r.error},
        "rows": [
            {
                "invariant": row.name,
                "cells": dict(zip(releases, row.cells)),
                "failures": {rel: by_release[rel].failures.get(row.name, []) for rel in releases},
                "changes": [{"release": rel, "from": a, "to": b} for rel, a, b in row.changes(releases)],
            }
            for row in rows(results)
        ],
    }
