"""What an audit rule is: a stable ID, a name, a severity, a one-line statement and its documentation."""

from __future__ import annotations

from dataclasses import dataclass

#: The rule reference that SARIF `helpUri` points to (one place to change if the docs move).
DOCS_URL = "https://github.com/loraguard/loraguard/blob/main/docs/audit.md"
#: The heading of docs/audit.md that holds each rule family's table, as GitHub anchors it.
SECTIONS = {
    "LG0": "input-lg0xx",
    "LG1": "safetensors-structure-lg1xx",
    "LG2": "keys-and-config-lg2xx",
    "LG3": "factors-and-values-lg3xx",
    "LG4": "pickles-lg4xx",
    "LG5": "merged-models-lg5xx",
    "LG6": "un-gathered-fsdp-saves-lg6xx",
}


@dataclass(frozen=True)
class Rule:
    """What the audit checks, as users and code-scanning tools see it."""

    id: str
    name: str
    severity: str
    summary: str
    unusable: bool = False
    #: The rule's documentation (the row of docs/audit.md), shipped in the package for `audit --explain`.
    detail: str = ""

    @property
    def help_uri(self) -> str:
        return f"{DOCS_URL}#{SECTIONS[self.id[:3]]}"
