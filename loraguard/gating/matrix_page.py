"""The release matrix as one self-contained HTML page: a plot (release x invariant, coloured by outcome, the first
change of each invariant marked) above the table. Inline SVG and CSS only: no script, no network asset."""

from __future__ import annotations

from html import escape

from loraguard.gating.matrix import ReleaseResult
from loraguard.gating.matrix_table import Row, rows

#: state -> (fill colour, legend text); colours stay distinguishable without colour vision (text is in each cell)
COLOURS = {
    "pass": ("#4caf50", "pass"),
    "same": ("#4caf50", "baseline: same"),
    "accepted": ("#9ccc65", "baseline: drift accepted"),
    "FAIL": ("#e53935", "FAIL (some tests failed)"),
    "DRIFT": ("#fb8c00", "baseline: drift"),
    "skip": ("#bdbdbd", "skipped"),
    "error": ("#424242", "release could not run"),
    "-": ("#ffffff", "not run"),
}
_CELL_W, _CELL_H, _LABEL_W, _HEAD_H = 92, 22, 190, 40


def render_html(results: list[ReleaseResult], title: str = "loraguard release matrix") -> str:
    """The whole page; the plot is an inline SVG with a <title> tooltip per cell."""
    releases = [r.release for r in results]
    table = rows(results)
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}td.change{outline:3px solid #1565c0}</style>",
        f"</head><body><h1>{escape(title)}</h1>",
        "<p>Rows: invariants (and the baseline comparison); columns: releases, oldest first. A blue frame marks the "
        "first release where an invariant's outcome, or its set of failing tests, changed.</p>",
        plot_svg(releases, table),
        _legend(),
        _table(releases, table),
        _environments(results),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _first_change_column(row: Row, releases: list[str]) -> int | None:
    changes = row.changes(releases)
    return releases.index(changes[0][0]) if changes else None


def plot_svg(releases: list[str], table: list[Row]) -> str:
    """A grid: one rectangle per (invariant, release), filled by state, the first change framed and starred."""
    width = _LABEL_W + _CELL_W * len(releases) + 10
    height = _HEAD_H + _CELL_H * len(table) + 10
    out = [
        f'<svg width="{width}" height="{height}" role="img" '
        'aria-label="release by invariant outcomes" font-family="sans-serif" font-size="11">'
    ]
    for j, rel in enumerate(releases):
        x = _LABEL_W + j * _CELL_W + _CELL_W / 2
        out.append(f'<text x="{x}" y="{_HEAD_H - 10}" text-anchor="middle" font-weight="bold">{escape(rel)}</text>')
    for i, row in enumerate(table):
        y = _HEAD_H + i * _CELL_H
        out.append(f'<text x="{_LABEL_W - 6}" y="{y + 15}" text-anchor="end">{escape(row.name)}</text>')
        first = _first_change_column(row, releases)
        for j, (state, cell) in enumerate(zip(row.states, row.cells)):
            x = _LABEL_W + j * _CELL_W
            fill = COLOURS.get(state[0], COLOURS["-"])[0]
            tip = f"{row.name} on {releases[j]}: {cell}" + (" (first change)" if j == first else "")
            out.append(
                f'<rect x="{x + 1}" y="{y + 1}" width="{_CELL_W - 2}" height="{_CELL_H - 2}" fill="{fill}" '
                f'stroke="#fff"><title>{escape(tip)}</title></rect>'
            )
            ink = "#fff" if state[0] in ("FAIL", "error") else "#000"
            label = ("\u2605 " if j == first else "") + cell
            out.append(
                f'<text x="{x + _CELL_W / 2}" y="{y + 15}" text-anchor="middle" fill="{ink}">{escape(label)}</text>'
            )
            if j == first:
                out.append(
                    f'<rect class="first-change" x="{x + 1}" y="{y + 1}" width="{_CELL_W - 2}" '
                    f'height="{_CELL_H - 2}" fill="none" stroke="#1565c0" stroke-width="3"/>'
                )
    out.append("</svg>")
    return "\n".join(out)


def _legend() -> str:
    items = [
        f'<span style="display:inline-block;width:12px;height:12px;background:{c};border:1px solid #999"></span> '
        f"{escape(text)}"
        for c, text in COLOURS.values()
    ]
    items.append('<span style="color:#1565c0">\u2605 framed</span>: first change')
    return "<p>" + " &nbsp; ".join(items) + "</p>"


def _table(releases: list[str], table: list[Row]) -> str:
    head = "".join(f"<th>{escape(r)}</th>" for r in ["invariant", *releases, "first change"])
    body = []
    for row in table:
        first = _first_change_column(row, releases)
        cells = "".join(f"<td{' class=change' if j == first else ''}>{escape(c)}</td>" for j, c in enumerate(row.cells))
        body.append(f"<tr><th>{escape(row.name)}</th>{cells}<td>{escape(row.first_change(releases))}</td></tr>")
    return f"<table><tr>{head}</tr>\n" + "\n".join(body) + "</table>"


def _environments(results: list[ReleaseResult]) -> str:
    items = []
    for r in results:
        if r.error:
            items.append(f"<li>{escape(r.release)}: ERROR {escape(r.error.splitlines()[0])}</li>")
        elif r.environment:
            env = ", ".join(f"{k} {v}" for k, v in sorted(r.environment.items()))
            items.append(f"<li>{escape(r.release)}: {escape(env)}</li>")
    return "<h2>Environments</h2><ul>" + "".join(items) + "</ul>" if items else ""
