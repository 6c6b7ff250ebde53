"""docs/audit.md documents every rule under its ID, name and severity with the text shipped in the package, and
`loraguard audit --explain` prints that text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loraguard.audit.rule_spec import SECTIONS
from loraguard.audit.rules import RULES
from loraguard.frontends.cli import main

DOC = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text()
ROWS = re.findall(r"^\| (LG\d{3}) \| ([a-z0-9-]+) \| ([a-z, ]+) \| (.*) \|$", DOC, re.M)


def test_every_rule_is_documented_with_its_name_severity_and_shipped_text():
    rows = {rid: (name, sev, text.replace("\\|", "|")) for rid, name, sev, text in ROWS}
    expected = {r.id: (r.name, r.severity + (", unusable" if r.unusable else ""), r.detail) for r in RULES.values()}
    assert rows == expected


def test_every_rule_has_a_summary_and_a_help_section_that_exists():
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.*)$", DOC, re.M)}
    assert set(SECTIONS.values()) <= anchors
    for rule in RULES.values():
        assert rule.summary and rule.detail and len(rule.summary) < len(rule.detail) + 40, rule.id
        assert rule.help_uri.startswith("https://") and rule.help_uri.split("#")[1] in anchors


def test_explain_prints_the_rule_documentation(capsys):
    assert main(["audit", "--explain", "lg201"]) == 0
    out = capsys.readouterr().out
    rule = RULES["LG201"]
    assert out.startswith("LG201 adapter-name-in-key (error)") and rule.summary in out and rule.detail in out


def test_explain_an_unknown_rule_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as err:
        main(["audit", "--explain", "LG999"])
    assert err.value.code == 2 and "LG999" in capsys.readouterr().err
