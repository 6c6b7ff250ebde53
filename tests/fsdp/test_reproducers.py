"""The peft bugs found under FSDP stay reproduced by their standalone scripts; the day peft fixes one, its test
fails, so the reproducer, docs/fsdp.md and this test are updated together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fsdp
REPRODUCERS = Path(__file__).resolve().parents[2] / "reproducers" / "peft"


def failure_of(script: str) -> str:
    """The script's AssertionError message; a script that passes means peft fixed the bug."""
    proc = subprocess.run([sys.executable, str(REPRODUCERS / script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, f"{script} passed: peft fixed the bug; update docs/fsdp.md and remove this test"
    assert "AssertionError: peft" in proc.stderr, proc.stderr[-3000:]
    return proc.stderr


def test_peft_drops_the_inactive_adapters_modules_to_save_copy_under_fsdp1():
    assert "was dropped" in failure_of("fsdp1_modules_to_save_dropped.py")


@pytest.mark.slow  # it waits out a hang (two ranks, 10 s after the gather)
def test_peft_save_on_rank0_hangs_when_a_modules_to_save_copy_is_an_fsdp_unit():
    assert "hangs in an all-gather" in failure_of("fsdp1_rank0_save_hangs.py")
