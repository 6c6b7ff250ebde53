"""Audit results as a table (for people), JSON (for scripts), JUnit XML (CI test reports) and SARIF 2.1.0
(GitHub code scanning), and the exit code: 2 unusable input, 1 findings at or above --fail-on, 0 otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

from loraguard import __version__
from loraguard.audit.checkpoint import AuditResult
from loraguard.audit.rules import RULES, SEVERITIES, Finding, at_or_above

FORMATS = ("table", "json", "junit", "sarif")
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def exit_code(result: AuditResult, fail_on: str) -> int:
    """2 if any input could not be audited, 1 if a finding is at or above `fail_on`, else 0."""
    if result.unusable:
        return 2
    return 1 if any(at_or_above(f.severity, fail_on) for f in result.findings) else 0


def render(result: AuditResult, fmt: str, fail_on: str) -> str:
    """The report in format `fmt` (one of FORMATS)."""
    return {"table": _table, "json": _json, "junit": _junit, "sarif": _sarif}[fmt](result, fail_on)


def _ordered(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (f.file, -SEVERITIES.index(f.severity), f.rule, f.key))


def _summary(result: AuditResult) -> str:
    counts = {s: sum(f.severity == s for f in result.findings) for s in reversed(SEVERITIES)}
    parts = [f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n]
    files = len(set(result.files))
    unusable = len({f.file for f in result.findings if f.unusable})
    tail = f"; {unusable} input(s) could not be audited" if unusable else ""
    return f"{', '.join(parts) or 'no findings'} in {files} file(s){tail}"


def _table(result: AuditResult, fail_on: str) -> str:
    lines: list[str] = []
    current = None
    for f in _ordered(result.findings):
        if f.file != current:
            current = f.file
            lines.append(f.file)
        where = f"  [{f.key}]" if f.key else ""
        lines.append(f"  {f.severity:<7} {f.rule} {RULES[f.rule].name:<24} {f.message}{where}")
    lines.append(_summary(result))
    return "\n".join(lines) + "\n"


def _json(result: AuditResult, fail_on: str) -> str:
    body = {
        "tool": "loraguard audit",
        "version": __version__,
        "fail_on": fail_on,
        "exit_code": exit_code(result, fail_on),
        "files": sorted(set(result.files)),
        "findings": [
            {
                "rule": f.rule,
                "name": RULES[f.rule].name,
                "severity": f.severity,
                "file": f.file,
                "key": f.key or None,
                "message": f.message,
            }
            for f in _ordered(result.findings)
        ],
        "summary": _summary(result),
    }
    return json.dumps(body, indent=2) + "\n"


def _junit(result: AuditResult, fail_on: str) -> str:
    """One test case per finding (failed at or above `fail_on`) and one passing case per clean file."""
    suite = ET.Element("testsuite", name="loraguard.audit")
    failures = 0
    flagged = {f.file for f in result.findings}
    for f in _ordered(result.findings):
        case = ET.SubElement(
            suite, "testcase", classname=f.file, name=f"{f.rule} {RULES[f.rule].name}" + (f" {f.key}" if f.key else "")
        )
        if at_or_above(f.severity, fail_on) or f.unusable:
            failures += 1
            ET.SubElement(case, "failure", message=f.message, type=f.rule).text = f"{f.severity}: {f.message}"
        else:
            ET.SubElement(case, "system-out").text = f"{f.severity}: {f.message}"
    for path in sorted(set(result.files) - flagged):
        ET.SubElement(suite, "testcase", classname=path, name="no findings")
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _uri(path: str) -> str:
    p = Path(path)
    return p.as_uri() if p.is_absolute() else p.as_posix()


def _sarif(result: AuditResult, fail_on: str) -> str:
    rule_ids = list(RULES)
    rules = [
        {
            "id": r.id,
            "name": r.name,
            "shortDescription": {"text": r.summary},
            "help": {"text": f"{r.summary} Rule reference: docs/audit.md in loraguard."},
            "defaultConfiguration": {"level": _SARIF_LEVEL[r.severity]},
        }
        for r in RULES.values()
    ]
    results = []
    for f in _ordered(result.findings):
        location: dict = {"physicalLocation": {"artifactLocation": {"uri": _uri(f.file)}}}
        if f.key:
            location["logicalLocations"] = [{"name": f.key, "kind": "member"}]
        results.append(
            {
                "ruleId": f.rule,
                "ruleIndex": rule_ids.index(f.rule),
                "level": _SARIF_LEVEL[f.severity],
                "message": {"text": f.message},
                "locations": [location],
            }
        )
    log = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "loraguard", "version": __version__, "rules": rules}},
                "artifacts": [{"location": {"uri": _uri(p)}} for p in sorted(set(result.files))],
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"
