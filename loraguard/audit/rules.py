"""Every audit rule by ID (each written once, in `rules_files` or `rules_contents`), and the Finding a rule produces.

IDs never change meaning once released. A rule marked `unusable` means the file could not be audited (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from loraguard.audit.rule_spec import Rule
from loraguard.audit.rules_contents import ADAPTER_RULES, FSDP_RULES, MERGE_RULES
from loraguard.audit.rules_files import INPUT_RULES, PICKLE_RULES

SEVERITIES = ("info", "warning", "error")

#: Longest message or key a finding carries.
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Finding:
    """One rule firing on one file (and key, when the problem belongs to a tensor)."""

    rule: str
    file: str
    message: str
    key: str = ""

    def __post_init__(self) -> None:
        # Messages and keys can quote a hostile file: bound them so one finding never floods a report.
        if len(self.message) > MAX_MESSAGE:
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE - 3] + "...")
        if len(self.key) > MAX_MESSAGE:
            object.__setattr__(self, "key", self.key[: MAX_MESSAGE - 3] + "...")

    @property
    def severity(self) -> str:
        return RULES[self.rule].severity

    @property
    def unusable(self) -> bool:
        return RULES[self.rule].unusable


#: Every rule by ID, in the order of docs/audit.md.
RULES: dict[str, Rule] = {r.id: r for r in [*INPUT_RULES, *ADAPTER_RULES, *PICKLE_RULES, *FSDP_RULES, *MERGE_RULES]}


def at_or_above(severity: str, threshold: str) -> bool:
    """True if `severity` is at least as serious as `threshold`."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)
