"""The `audit` and `audit-merge` commands: exit codes, report formats, read-only behaviour and hostile inputs."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from loraguard.audit.progress import LARGE_FILE_BYTES, terminal_progress
from loraguard.audit.rules import RULES
from loraguard.frontends.cli import main
from tests.audit.helpers import validate_sarif

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "checkpoints"
GOOD, BROKEN = FIXTURES / "good_adapter", FIXTURES / "non_finite"


def cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().out


def test_exit_codes(capsys):
    assert cli(capsys, "audit", GOOD)[0] == 0
    assert cli(capsys, "audit", GOOD, BROKEN)[0] == 1
    warning_only = FIXTURES / "zero_lora_b_layer"
    assert cli(capsys, "audit", warning_only)[0] == 0
    assert cli(capsys, "audit", "--fail-on", "warning", warning_only)[0] == 1
    code, out = cli(capsys, "audit", GOOD, FIXTURES / "header_length.safetensors", BROKEN)
    assert code == 2 and "LG101" in out and "LG306" in out, "one broken file must not stop the others"


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as err:
        main(["audit", "--format", "yaml", str(GOOD)])
    assert err.value.code == 2


def test_json_report(capsys):
    code, out = cli(capsys, "audit", "--format", "json", GOOD, BROKEN)
    report = json.loads(out)
    assert report["exit_code"] == code == 1
    assert [(f["rule"], f["severity"]) for f in report["findings"]] == [("LG306", "error")]
    assert str(GOOD / "adapter_model.safetensors") in report["files"]


def test_junit_report_fails_on_findings_at_threshold(capsys):
    _, out = cli(capsys, "audit", "--format", "junit", GOOD, BROKEN, FIXTURES / "zero_lora_b_layer")
    suite = ET.fromstring(out).find("testsuite")
    cases = suite.findall("testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failed) == 1 and failed[0].find("failure").get("type") == "LG306"
    assert int(suite.get("tests")) == len(cases)
    assert any(c.get("name") == "no findings" and "good_adapter" in c.get("classname") for c in cases)
    assert any(c.find("system-out") is not None and "LG304" in c.get("name") for c in cases)


def test_sarif_report_is_consistent(capsys):
    _, out = cli(capsys, "audit", "--format", "sarif", GOOD, BROKEN, FIXTURES / "adapter_name_in_key")
    log = validate_sarif(out)
    assert log["version"] == "2.1.0" and len(log["runs"]) == 1
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules] == list(RULES)
    assert {r["ruleId"] for r in run["results"]} == {"LG306", "LG201"}
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note") and result["message"]["text"]
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert result["locations"][0]["logicalLocations"][0]["name"].startswith("base_model.model.")


def _snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns, p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_audit_never_writes_to_what_it_audits(capsys, tmp_path):
    tree = shutil.copytree(FIXTURES, tmp_path / "ro")
    for p in [*tree.rglob("*"), tree]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = _snapshot(tree)
    cli(capsys, "audit", "--allow-pickle", *sorted(tree.iterdir()))
    cli(
        capsys,
        "audit-merge",
        "--base",
        tree / "merge/base.safetensors",
        "--adapter",
        tree / "merge/adapter",
        "--merged",
        tree / "merge/merged_ok.safetensors",
    )
    assert _snapshot(tree) == before
    for p in [*tree.rglob("*"), tree]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_hostile_paths_are_unusable_not_crashes(capsys, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(tmp_path / "loop")
    looped_weights = tmp_path / "adapter"
    shutil.copytree(GOOD, looped_weights)
    (looped_weights / "adapter_model.safetensors").unlink()
    (looped_weights / "adapter_model.safetensors").symlink_to(looped_weights / "adapter_model.safetensors")
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    list_config = shutil.copytree(GOOD, tmp_path / "list_config")
    (list_config / "adapter_config.json").write_text("[1, 2]")
    (tmp_path / "empty").mkdir()
    cases = {
        loop: "LG001",
        looped_weights: "LG001",
        fifo: "LG005",
        tmp_path / "absent": "LG001",
        list_config: "LG003",
        tmp_path / "empty": "LG002",
        FIXTURES / "make-believe.txt": "LG001",
    }
    for path, rule in cases.items():
        code, out = cli(capsys, "audit", "--format", "json", path)
        found = [f["rule"] for f in json.loads(out)["findings"]]
        assert code == 2 and rule in found, (path, found)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(capsys, tmp_path):
    path = tmp_path / "w.safetensors"
    shutil.copy(FIXTURES / "good_adapter" / "adapter_model.safetensors", path)
    path.chmod(0)
    code, out = cli(capsys, "audit", path)
    assert code == 2 and "LG001" in out


def test_no_traceback_from_the_installed_command(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 40)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loraguard.frontends.cli",
            "audit",
            str(tmp_path / "junk.safetensors"),
            str(FIXTURES / "pickle_unreadable.bin"),
            str(tmp_path / "nothing"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr + proc.stdout
    assert {"LG101", "LG403", "LG001"} <= {w for w in proc.stdout.split() if w.startswith("LG")}


def test_audit_merge_command(capsys):
    merge = FIXTURES / "merge"
    args = ["audit-merge", "--base", merge / "base.safetensors", "--adapter", merge / "adapter", "--merged"]
    assert cli(capsys, *args, merge / "merged_ok.safetensors")[0] == 0
    code, out = cli(capsys, *args, merge / "merged_noop.safetensors")
    assert code == 1 and "LG501" in out
    assert cli(capsys, *args, merge / "missing.safetensors")[0] == 2


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_only_for_large_files():
    assert terminal_progress(io.StringIO()) is None
    stream = _Terminal()
    start = terminal_progress(stream)
    assert start("small", LARGE_FILE_BYTES - 1) is None
    advance = start("big.safetensors", LARGE_FILE_BYTES)
    advance(LARGE_FILE_BYTES // 2)
    advance(LARGE_FILE_BYTES // 2)
    assert "big.safetensors" in stream.getvalue() and "268.4/268.4 MB" in stream.getvalue()


def test_command_modules_import_nothing_heavy():
    code = "import sys, loraguard.audit.cli, loraguard.audit.merge_cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert out.strip() == "False"


def test_auditing_safetensors_adapters_imports_no_torch():
    """What a pre-commit hook runs: values are judged off their bits, so the command never pays torch's import."""
    paths = [str(GOOD), str(BROKEN), str(FIXTURES / "zero_lora_b_layer")]
    code = "import sys\nfrom loraguard.frontends.cli import main\n"
    code += f"print(main(['audit', *{paths!r}]), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60).stdout
    assert "LG306" in out and "LG304" in out and out.rstrip().endswith("1 False"), out


def test_progress_label_is_escaped():
    stream = _Terminal()
    advance = terminal_progress(stream)("a\x1b[2Kb[bold].safetensors", LARGE_FILE_BYTES)
    advance(LARGE_FILE_BYTES)
    assert "a\\x1b[2Kb[bold].safetensors" in stream.getvalue()
