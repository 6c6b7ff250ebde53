"""A comparison as text (terminal, pytest failure), Markdown (CI summaries, PR comments) or JSON (tools)."""

from __future__ import annotations

from typing import Any

from loraguard.gating.compare import Comparison, ScenarioReport


def header(c: Comparison) -> str:
    m = c.manifest
    return (
        f"baseline {c.snapshot}: {m.backend} {m.library_version} (torch {m.environment.get('torch', '?')}, "
        f"taken {m.created}); now: {c.backend} {c.version}"
    )


def scenario_lines(r: ScenarioReport, notes: bool = False) -> list[str]:
    """One scenario's diff: a status line, then each drift's lines indented under its kind."""
    kinds = ", ".join(d.kind for d in r.drifts)
    lines = [f"{r.id}: {r.status.upper() if r.status == 'drift' else r.status}" + (f" ({kinds})" if kinds else "")]
    for d in r.drifts:
        tag = f"accepted, accepted.txt:{d.accepted.line}: {d.accepted.reason}" if d.accepted else "not accepted"
        lines.append(f"  {d.kind} [{tag}]:")
        lines += [f"    {line}" for line in d.lines]
    if notes:
        lines += [f"  note: {n}" for n in r.notes]
    return lines


def summary(c: Comparison) -> str:
    counts = {s: sum(r.status == s for r in c.scenarios) for s in ("ok", "accepted", "drift")}
    verdict = "FAIL: drift not accepted" if c.failed else "pass"
    return (
        f"{len(c.scenarios)} scenarios: {counts['ok']} unchanged, {counts['accepted']} with accepted drift, "
        f"{counts['drift']} drifted; {verdict}"
    )


def render_text(c: Comparison, notes: bool = False) -> str:
    lines = [header(c), ""]
    for r in c.scenarios:
        lines += scenario_lines(r, notes)
    for a in c.unused:
        lines.append(f"accepted.txt:{a.line}: '{a.pattern}: {a.kind}' matches no drift any more; remove the line")
    skipped = c.manifest.skipped
    if skipped:
        lines.append(f"not in the baseline (the recorded release could not run them): {', '.join(sorted(skipped))}")
    lines += ["", summary(c)]
    return "\n".join(lines)


def render_markdown(c: Comparison) -> str:
    lines = [
        "### loraguard baseline comparison",
        "",
        header(c),
        "",
        "| scenario | status | drift |",
        "| --- | --- | --- |",
    ]
    for r in c.scenarios:
        kinds = ", ".join(f"{d.kind} (accepted)" if d.accepted else f"**{d.kind}**" for d in r.drifts) or "-"
        lines.append(f"| {r.id} | {r.status} | {kinds} |")
    drifted = [r for r in c.scenarios if r.drifts]
    if drifted:
        lines += ["", "```text", *[line for r in drifted for line in scenario_lines(r)], "```"]
    lines += ["", summary(c)]
    return "\n".join(lines)


def to_json(c: Comparison) -> dict[str, Any]:
    return {
        "baseline": {
            "path": str(c.snapshot),
            "backend": c.manifest.backend,
            "release": c.manifest.library_version,
            "environment": c.manifest.environment,
            "created": c.manifest.created,
        },
        "now": {"backend": c.backend, "release": c.version},
        "failed": c.failed,
        "scenarios": [
            {
                "id": r.id,
                "status": r.status,
                "notes": r.notes,
                "drifts": [
                    {"kind": d.kind, "lines": d.lines, "accepted": d.accepted.reason if d.accepted else None}
                    for d in r.drifts
                ],
            }
            for r in c.scenarios
        ],
        "unused_acceptances": [{"line": a.line, "pattern": a.pattern, "kind": a.kind} for a in c.unused],
    }
