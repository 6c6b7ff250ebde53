"""The plugin works from an installed wheel, in a directory with no loraguard source (slow: builds a venv)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_installed_wheel_runs_the_suite_from_an_empty_directory(tmp_path: Path) -> None:
    wheels, venv, empty = tmp_path / "wheels", tmp_path / "venv", tmp_path / "empty"
    empty.mkdir()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(wheels)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    wheel = next(wheels.glob("loraguard-*.whl"))
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)], check=True
    )
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pytest",
            "--loraguard",
            "--loraguard-profile",
            "quick",
            "--loraguard-backend",
            "reference",
            "-p",
            "no:cacheprovider",
            "-q",
        ],
        cwd=empty,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "loraguard summary (reference" in done.stdout
    assert not any(empty.rglob("*.py")), "the suite must come from the installed package, not the directory"
