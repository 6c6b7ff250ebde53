"""Progress (loraguard.core.progress): drawn by rich on a terminal only, without colour under NO_COLOR."""

from __future__ import annotations

import io

import pytest

from loraguard.core.progress import bytes_progress, on_terminal, steps


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
