"""The peft bug found under FSDP stays reproduced by its standalone script; the day peft fixes it this test fails,
so the reproducer, the docs entry (docs/fsdp.md) and this test are updated together."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.fsdp
SCRIPT = Path(__file__).resolve().parents[2] / "reproducers" / "peft" / "fsdp1_modules_to_save_dropped.py"


def test_peft_drops_the_inactive_adapters_modules_to_save_copy_under_fsdp1():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0, "the reproducer passed: peft fixed the bug; update docs/fsdp.md and remove this test"
    assert "AssertionError: peft saved" in proc.stderr and "was dropped" in proc.stderr, proc.stderr[-3000:]
