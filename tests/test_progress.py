"""Progress (loraguard.core.progress): drawn by rich on a terminal only, without colour under NO_COLOR."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from loraguard.core.progress import bytes_progress, on_terminal, steps
from loraguard.frontends.cli import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_drawn_when_stderr_is_not_a_terminal() -> None:
    log = io.StringIO()
    with steps("snapshot", 2, log) as step:
        step("mlp-r4-f32")
        step("mlp-r4-bf16")
    assert bytes_progress("big", 100, log) is None
    assert log.getvalue() == "" and not on_terminal(log)


def test_steps_show_the_item_and_the_count_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    term = _Terminal()
    with steps("snapshot", 2, term) as step:
        step("mlp-r4-f32")
        step("mlp-r4-bf16")
    drawn = term.getvalue()
    assert "snapshot" in drawn and "2/2" in drawn and "\x1b[3" in drawn  # coloured by default


def test_no_color_and_dumb_terminals_are_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("NO_COLOR", "1")
    term = _Terminal()
    advance = bytes_progress("big.safetensors", 1000, term)
    assert advance is not None
    advance(1000)
    assert "big.safetensors" in term.getvalue() and "\x1b[3" not in term.getvalue()  # no colour escapes
    monkeypatch.setenv("TERM", "dumb")
    assert not on_terminal(_Terminal())


def _snapshot(out: Path, stderr: int, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "loraguard", "snapshot", "--out", str(out), "--backend", "reference"]
    return subprocess.run([*cmd, "--zoo", "mlp", "--dtype", "f32"], stderr=stderr, stdout=subprocess.PIPE, env=env)


@pytest.mark.spawns
def test_a_real_command_draws_on_a_terminal_and_stays_quiet_in_a_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`loraguard snapshot` with stderr on a pseudo-terminal (NO_COLOR set), then with stderr in a file, as in CI.

    The terminal needs its own process; the log run is in this one (one torch import less), its stderr a file.
    """
    env = {"TERM": "xterm", "NO_COLOR": "1", "COLUMNS": "120"}
    leader, follower = pty.openpty()
    try:
        done = _snapshot(tmp_path / "a", follower, {**os.environ, **env})
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: everything has been read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0 and b"snapshot reference" in drawn and b"\x1b[3" not in drawn
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capfd.readouterr()
    args = ["snapshot", "--out", str(tmp_path / "b"), "--backend", "reference", "--zoo", "mlp", "--dtype", "f32"]
    assert main(args) == 0
    assert capfd.readouterr().err == ""
