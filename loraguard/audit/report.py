"""Audit results as a table (for people), JSON (for scripts), JUnit XML (CI test reports) and SARIF 2.1.0
(GitHub code scanning), and the exit code: 2 unusable input, 1 findings at or above --fail-on, 0 otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import quote
from xml.etree import ElementTree as ET

from loraguard import __version__
from loraguard.audit.checkpoint import AuditResult
from loraguard.audit.rules import RULES, SEVERITIES, Finding, at_or_above
from loraguard.audit.text import printable

FORMATS = ("table", "json", "junit", "sarif")
_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


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
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    return f"{', '.join(parts) or 'no findings'} in {files} file(s){skipped}{tail}"


def _table(result: AuditResult, fail_on: str) -> str:
    lines: list[str] = []
    current = None
    for f in _ordered(result.findings):
        if f.file != current:
            current = f.file
            lines.append(printable(f.file))
        where = f"  [{printable(f.key)}]" if f.key else ""
        lines.append(f"  {f.severity:<7} {f.rule} {RULES[f.rule].name:<24} {printable(f.message)}{where}")
    if result.skipped:
        lines.append("skipped (no loader runs code from these):")
        lines += [f"  {printable(path)}: {printable(reason)}" for path, reason in sorted(result.skipped)]
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
        "skipped": [{"file": path, "reason": reason} for path, reason in sorted(result.skipped)],
        "summary": _summary(result),
    }
    return json.dumps(body, indent=2) + "\n"


def _junit(result: AuditResult, fail_on: str) -> str:
    """One test case per finding (failed at or above `fail_on`) and one passing case per clean file."""
    suite = ET.Element("testsuite", name="loraguard.audit")
    failures = 0
    flagged = {f.file for f in result.findings}
    for f in _ordered(result.findings):
        name = f"{f.rule} {RULES[f.rule].name}" + (f" {printable(f.key)}" if f.key else "")
        case = ET.SubElement(suite, "testcase", classname=printable(f.file), name=name)
        message = printable(f.message)
        if at_or_above(f.severity, fail_on) or f.unusable:
            failures += 1
            ET.SubElement(case, "failure", message=message, type=f.rule).text = f"{f.severity}: {message}"
        else:
            ET.SubElement(case, "system-out").text = f"{f.severity}: {message}"
    for path in sorted(set(result.files) - flagged):
        ET.SubElement(suite, "testcase", classname=printable(path), name="no findings")
    for path, reason in sorted(result.skipped):
        case = ET.SubElement(suite, "testcase", classname=printable(path), name="skipped")
        ET.SubElement(case, "skipped", message=printable(reason))
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(len(result.skipped)))
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _location(path: str, root: Path) -> dict:
    """A SARIF artifact location: relative to %SRCROOT% (the working directory) when inside it, else a file URI."""
    absolute = Path(os.path.abspath(path))
    try:
        relative = absolute.relative_to(root)
    except ValueError:
        return {"uri": "file://" + _quote(absolute.as_posix())}
    return {"uri": _quote(relative.as_posix()), "uriBaseId": "%SRCROOT%"}


def _quote(path: str) -> str:
    """Percent-encode a path for a URI, including bytes that are not UTF-8 (kept by Python as surrogates)."""
    return quote(os.fsencode(path), safe="/")


def _fingerprints(findings: list[Finding], root: Path) -> list[str]:
    """A stable identity per finding (rule, file, key, and which of its kind it is) for code scanning to track."""
    seen: dict[str, int] = {}
    out = []
    for f in findings:
        where = _location(f.file, root)["uri"] if f.file else ""
        base = hashlib.sha256(f"{f.rule}\0{where}\0{printable(f.key)}".encode()).hexdigest()[:32]
        seen[base] = seen.get(base, 0) + 1
        out.append(f"{base}:{seen[base]}")
    return out


def _sarif(result: AuditResult, fail_on: str) -> str:
    root = Path(os.path.abspath(os.getcwd()))
    rule_ids = list(RULES)
    rules = [
        {
            "id": r.id,
            "name": r.name,
            "shortDescription": {"text": r.summary},
            "fullDescription": {"text": r.detail},
            "help": {"text": r.detail, "markdown": r.detail},
            "helpUri": r.help_uri,
            "defaultConfiguration": {"level": _SARIF_LEVEL[r.severity]},
            "properties": {"tags": ["security"] if r.id.startswith(("LG0", "LG4")) else ["correctness"]},
        }
        for r in RULES.values()
    ]
    ordered = _ordered(result.findings)
    results = []
    for f, fingerprint in zip(ordered, _fingerprints(ordered, root)):
        location: dict = {
            "physicalLocation": {"artifactLocation": _location(f.file or ".", root), "region": {"startLine": 1}}
        }
        if f.key:
            location["logicalLocations"] = [{"name": printable(f.key), "kind": "member"}]
        results.append(
            {
                "ruleId": f.rule,
                "ruleIndex": rule_ids.index(f.rule),
                "level": _SARIF_LEVEL[f.severity],
                "message": {"text": printable(f.message)},
                "locations": [location],
                "partialFingerprints": {"loraguardFinding/v1": fingerprint},
            }
        )
    notifications = [
        {
            "level": "note",
            "message": {"text": f"skipped: {printable(reason)}"},
            "locations": [{"physicalLocation": {"artifactLocation": _location(path, root)}}],
        }
        for path, reason in sorted(result.skipped)
    ]
    log = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "loraguard",
                        "version": __version__,
                        "informationUri": RULES["LG001"].help_uri.split("#")[0],
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {"%SRCROOT%": {"uri": root.as_uri().rstrip("/") + "/"}},
                "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
                "artifacts": [{"location": _location(p, root)} for p in sorted(set(result.files))],
                "results": results,
            }
        ],
    }
    return json.dumps(log, indent=2) + "\n"
