"""docs/audit.md documents every rule under its ID, name and severity, and nothing that is not a rule."""

from __future__ import annotations

import re
from pathlib import Path

from loraguard.audit.rules import RULES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text()


def test_every_rule_is_documented_with_its_name_and_severity():
    rows = {m[0]: (m[1], m[2]) for m in re.findall(r"^\| (LG\d{3}) \| ([a-z0-9-]+) \| ([a-z]+)", DOC, re.M)}
    assert rows == {r.id: (r.name, r.severity) for r in RULES.values()}


def test_unusable_rules_are_marked_so():
    marked = set(re.findall(r"^\| (LG\d{3}) \| [a-z0-9-]+ \| [a-z]+, unusable", DOC, re.M))
    assert marked == {r.id for r in RULES.values() if r.unusable}
