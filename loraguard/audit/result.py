"""What an audit run gathers (files audited, files skipped, findings) and the options it runs with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from loraguard.audit.rules import Finding

#: Given a label and a byte count, a callback to report bytes read (or None for no progress display).
ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


@dataclass
class AuditResult:
    """Files looked at, files skipped (with the reason) and what was found."""

    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def unusable(self) -> bool:
        return any(f.unusable for f in self.findings)


@dataclass(frozen=True)
class Options:
    allow_pickle: bool = False
    progress: ProgressFactory | None = None
