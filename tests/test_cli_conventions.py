"""The `loraguard` command as a user meets it: --version, `python -m loraguard`, one vocabulary of option values
across commands, errors naming the option given. `--model module:factory` found from the project root by the
console script (as pytest finds it) is run by tests/test_readme.py, with the README's own commands."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loraguard import __version__
from loraguard.core.vocabulary import DTYPE_NAMES, FORMATS
from loraguard.frontends.cli import COMMANDS, build_parser, main

BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("cmd", [[str(BIN / "loraguard")], [sys.executable, "-m", "loraguard"]])
def test_version_from_the_script_and_from_python_m(cmd: list[str], tmp_path: Path) -> None:
    done = _run([*cmd, "--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"loraguard {__version__}"


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_every_command_spells_formats_and_dtypes_from_one_vocabulary() -> None:
    parsers = _subparsers()
    assert set(parsers) == set(COMMANDS)
    for name, parser in parsers.items():
        fmt = _option(parser, "--format")
        if fmt is not None:
            assert set(fmt.choices) <= set(FORMATS), name
            assert {"text", "table"} <= set(fmt.choices), f"{name}: text and table name the same format"
        dtype = _option(parser, "--dtype")
        if dtype is not None:
            assert list(dtype.choices) == list(DTYPE_NAMES), name
        assert _option(parser, "--models") is None and _option(parser, "--dtypes") is None, name
    assert _option(parsers["demo"], "--zoo") and _option(parsers["snapshot"], "--zoo")


def test_long_dtype_names_are_accepted_and_unknown_ones_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert build_parser().parse_args(["demo", "--dtype", "float32", "--dtype", "bf16"]).dtype == ["f32", "bf16"]
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["snapshot", "--out", "x", "--dtype", "f8"])
    assert exit_.value.code == 2 and "invalid choice: 'f8'" in capsys.readouterr().err


def test_errors_name_the_option_the_user_gave(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "b")
    assert main(["snapshot", "--out", out, "--backend", "reference", "--model", "nosuchpkg.models:tiny"]) == 2
    err = capsys.readouterr().err
    assert "--model 'nosuchpkg.models:tiny': No module named 'nosuchpkg'" in err and "--loraguard-" not in err
    assert "looked in the installed packages and in" in err
    assert main(["snapshot", "--out", out, "--backend", "reference", "--zoo", "nosuch"]) == 2
    assert "--zoo: unknown zoo model(s) ['nosuch']" in capsys.readouterr().err
