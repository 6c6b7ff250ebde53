"""accepted.txt beside a baseline: drift a team has reviewed and accepted, one ``scenario: kind  # reason`` a line.

The scenario may be a glob (``*-bf16``); the reason is required, because the file is read in review, not by tools.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

#: Kinds of drift a comparison reports, each with what it means for a user of the adapter.
KINDS = {
    "load": "the recorded adapter no longer loads with this release",
    "outputs": "outputs of the loaded adapter (unmerged or merged) moved beyond the dtype's bound",
    "base": "outputs with adapters disabled moved: the base model or its library changed, not the adapter",
    "keys": "the release's own save has other keys, shapes or dtypes than the recorded save",
    "config": "the release's own save writes a config field differently, or no longer writes it",
    "save": "the release can no longer build and save the scenario's adapter",
}


@dataclass(frozen=True)
class Acceptance:
    """One accepted drift: which scenarios (a glob), which kind, and why."""

    pattern: str
    kind: str
    reason: str
    line: int

    def covers(self, scenario: str, kind: str) -> bool:
        return kind == self.kind and fnmatch.fnmatchcase(scenario, self.pattern)


def read_accepted(path: Path) -> list[Acceptance]:
    """Parse accepted.txt (absent: nothing accepted); a malformed line is a ValueError naming file and line."""
    if not path.is_file():
        return []
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        body, _, reason = line.partition("#")
        if not body.strip():
            continue
        pattern, colon, kind = body.partition(":")
        pattern, kind, reason = pattern.strip(), kind.strip(), reason.strip()
        where = f"{path}:{number}"
        if not colon or not pattern or " " in pattern:
            raise ValueError(f"{where}: expected 'scenario: kind  # reason', got {line!r}")
        if kind not in KINDS:
            raise ValueError(f"{where}: unknown drift kind {kind!r}; use one of {sorted(KINDS)}")
        if not reason:
            raise ValueError(f"{where}: give the reason after '#' (why this drift is safe to accept)")
        out.append(Acceptance(pattern, kind, reason, number))
    return out
