"""The end-of-run table: one row per invariant, one column per backend, counts of each outcome."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

_ORDER = ("passed", "partial", "failed", "xfailed", "skipped")


def cell(counts: Counter) -> str:
    """``12 passed, 1 failed`` style text for one invariant x backend cell ('-' when nothing ran)."""
    parts = [f"{counts[k]} {k}" for k in _ORDER if counts.get(k)]
    return ", ".join(parts) or "-"


def render_table(outcomes: Mapping[tuple[str, str], Counter], backends: list[str]) -> str:
    """A fixed-width table of invariant x backend outcomes, invariants sorted by name."""
    invariants = sorted({inv for inv, _ in outcomes})
    rows = [["invariant", *backends]]
    rows += [[inv, *(cell(outcomes.get((inv, b), Counter())) for b in backends)] for inv in invariants]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_details(sections: list[tuple[str, Mapping[str, int]]], top: int = 8) -> list[str]:
    """Counted lines under the table, commonest first, `top` per section (the rest summed in one line)."""
    lines: list[str] = []
    for title, counts in sections:
        if not counts:
            continue
        lines.append(f"{title}:")
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        lines += [f"  {count:>5}  {what}" for what, count in ranked[:top]]
        if len(ranked) > top:
            lines.append(f"  {sum(c for _, c in ranked[top:]):>5}  ({len(ranked) - top} more kinds)")
    return lines
