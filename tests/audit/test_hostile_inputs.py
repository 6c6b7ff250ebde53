"""`loraguard audit` on hostile directories: every case of the generated corpus (tests/audit/hostile.py) is flagged
with its rule and exit code, no payload runs while auditing, each payload does run when a victim loads the file,
and nothing blocks, hangs, floods memory or echoes unescaped bytes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import signal
import time
import tracemalloc
import warnings
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy
import pytest
import torch

from loraguard.audit.pickle_files import INFLATE_CAP, scan_file
from loraguard.frontends.cli import main
from tests.audit import hostile
from tests.audit.helpers import audit, rules, validate_sarif


def run_cli(*argv: object) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus, each case audited once through the command (JSON report, --allow-pickle), with its time."""
    root = tmp_path_factory.mktemp("hostile")
    cases = hostile.build(root)
    reports = {}
    for case in cases:
        start = time.perf_counter()
        code, out = run_cli("audit", "--allow-pickle", "--format", "json", case.path)
        reports[case.name] = (code, json.loads(out), time.perf_counter() - start)
    return root, cases, reports


def test_every_case_is_flagged_with_its_rule_and_exit_code(corpus):
    _, cases, reports = corpus
    wrong = []
    for case in cases:
        code, report, _ = reports[case.name]
        found = {f["rule"] for f in report["findings"]}
        if not case.rules <= found or code != case.exit_code:
            wrong.append((case.name, sorted(found), code, [f["message"][:120] for f in report["findings"]]))
    assert not wrong
    assert len({c.klass for c in cases}) >= 15 and len(cases) >= 45


def test_auditing_runs_no_payload_but_loading_runs_every_one(corpus):
    root, cases, _ = corpus
    assert not list((root / "sentinels").iterdir()), "a payload ran during the audit"
    live = [c for c in cases if c.load]
    # The victim: torch.load(weights_only=False), as torch < 2.6 did by default, pickle.load or numpy.load.
    # Each payload only creates its sentinel, so running them here is harmless.
    for case in live:
        target = case.path / case.target if case.target else case.path
        with contextlib.suppress(Exception), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if case.load == "torch":
                torch.load(target, weights_only=False)
            elif case.load == "numpy":
                loaded = numpy.load(target, allow_pickle=True)
                _ = [loaded[k] for k in loaded.files] if hasattr(loaded, "files") else loaded
            else:
                with open(target, "rb") as f:
                    pickle.load(f)
    dead = [c.name for c in live if not c.sentinel.exists()]
    assert not dead, f"these cases are not live payloads: {dead}"


def test_a_catastrophic_config_regex_is_bounded(corpus):
    _, _, reports = corpus
    code, report, seconds = reports["catastrophic_regex"]
    assert [f["rule"] for f in report["findings"]] == ["LG209"] and code == 1
    assert seconds < 30, f"{seconds:.1f} s"  # the bound is 0.25 s a match; generous for a loaded CI machine
    assert reports["nested_quantifier_regex"][2] < 30
    code, report, seconds = reports["catastrophic_rank_pattern_regex"]
    assert "LG209" in {f["rule"] for f in report["findings"]} and "Traceback" not in json.dumps(report)
    assert seconds < 30, f"{seconds:.1f} s"


def test_trainer_checkpoint_lists_every_other_file_as_skipped(tmp_path):
    hostile.clean_adapter(tmp_path)
    (tmp_path / "README.md").write_text("# an adapter\n")
    (tmp_path / "tokenizer.json").write_text("{}")
    code, out = run_cli("audit", "--format", "json", tmp_path)
    report = json.loads(out)
    assert code == 0 and report["findings"] == []
    assert {Path(s["file"]).name for s in report["skipped"]} == {"README.md", "tokenizer.json"}
    assert all(s["reason"] for s in report["skipped"])


def test_benign_torch_saves_flag_nothing_as_code(tmp_path):
    paths = hostile.benign(tmp_path)
    result = audit(*paths)
    assert rules(result) == {"LG402"} and len(result.findings) == len(paths)


def test_inflation_is_capped_in_time_and_memory(tmp_path):
    bomb = tmp_path / "model.bin"
    bomb.write_bytes(hostile.deflate_bomb(hostile.BOMB_BYTES))
    assert bomb.stat().st_size < 1_100_000  # 1 MB on disk, 1 GiB inflated
    tracemalloc.start()
    try:
        scan = scan_file(str(bomb))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [rule for rule, _ in scan.problems] == ["LG405"]
    assert peak < INFLATE_CAP // 8, f"{peak >> 20} MiB held while inflating"


@pytest.mark.skipif(not hasattr(signal, "SIGALRM") or not os.path.exists("/dev/zero"), reason="POSIX FIFOs, alarms")
def test_fifos_and_devices_are_never_opened(tmp_path):
    cases = hostile.build_special(tmp_path)
    extra = tmp_path / "named_anything"
    extra.mkdir()
    os.mkfifo(extra / "README")  # a FIFO under a name no loader reads is listed as skipped, not opened either
    hostile.clean_adapter(extra)

    # An open that blocks on a FIFO is interrupted by the alarm, so a regression fails instead of hanging.
    def hung(signum, frame):
        raise TimeoutError("the audit blocked on a special file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        code, out = run_cli("audit", "--format", "json", *[c.path for c in cases], extra)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert code == 2
    report = json.loads(out)
    for case in cases:
        assert any(f["rule"] == "LG005" and f["file"].startswith(str(case.path)) for f in report["findings"]), case.name
    assert [Path(s["file"]).name for s in report["skipped"]] == ["README"]


def test_walk_is_bounded_in_depth(tmp_path):
    deep = tmp_path
    for _ in range(40):
        deep = deep / "d"
    deep.mkdir(parents=True)
    hostile.clean_adapter(tmp_path / "d")
    result = audit(tmp_path)
    assert rules(result) == {"LG006"} and result.unusable


@pytest.mark.parametrize("fmt", ["table", "json", "junit", "sarif"])
def test_names_are_escaped_and_file_bytes_never_echoed(corpus, fmt):
    root, cases, _ = corpus
    by_name = {c.name: c for c in cases}
    paths = [by_name["control_chars_in_key"].path, by_name["symlink_to_secret"].path]
    code, out = run_cli("audit", "--format", fmt, *paths)
    assert code == 2 and "TOPSECRET" not in out
    assert not any(ch in out for ch in "\x1b\r\x00\x07"), repr(out[:300])
    if fmt == "table":
        assert "\\x1b[2K" in out
    elif fmt == "json":
        report = json.loads(out)
        assert any("\x1b" in (f["key"] or "") for f in report["findings"]), "JSON keeps the real key, escaped by JSON"
    elif fmt == "junit":
        ET.fromstring(out)
    else:
        validate_sarif(out)


def test_every_sarif_report_of_the_corpus_is_valid_and_trackable(corpus):
    root, cases, _ = corpus
    code, out = run_cli("audit", "--format", "sarif", *[c.path for c in cases])
    log = validate_sarif(out)
    run = log["runs"][0]
    assert all(r["helpUri"].startswith("https://") for r in run["tool"]["driver"]["rules"])
    fingerprints = [r["partialFingerprints"]["loraguardFinding/v1"] for r in run["results"]]
    assert len(fingerprints) == len(set(fingerprints)) >= len(cases)
    for result in run["results"]:
        location = result["locations"][0]["physicalLocation"]
        assert location["region"]["startLine"] == 1 and location["artifactLocation"]["uri"]


def test_symlinked_folders_are_followed_once_and_never_out_of_the_tree(tmp_path):
    tree = tmp_path / "tree"
    hostile.clean_adapter(tree / "adapter")
    (tmp_path / "elsewhere.pkl").write_bytes(pickle.dumps({"a": 1}))
    (tree / "loop").symlink_to(tree)  # inside the tree: walked once
    (tree / "up").symlink_to(tmp_path)  # outside: listed, not followed
    code, out = run_cli("audit", "--format", "json", tree)
    report = json.loads(out)
    assert code == 0 and report["findings"] == [] and len(report["files"]) == 2
    assert [(Path(s["file"]).name, "outside" in s["reason"]) for s in report["skipped"]] == [("up", True)]
