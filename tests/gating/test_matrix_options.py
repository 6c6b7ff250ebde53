"""`loraguard matrix`'s own options: the suite it runs in each release (profile, zoo, dtype, workers) and the reuse
of an environment already installed with the same inputs (uv rebuilds an editable loraguard on every install)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loraguard.frontends.cli import main
from loraguard.gating import environments, matrix_table
from loraguard.gating.environments import EnvSetupError, install_stamp, make_env, release
from loraguard.gating.matrix import ReleaseResult, Suite, read_junit


def test_the_suite_narrows_the_release_run_only_when_asked(tmp_path: Path) -> None:
    default = Suite().pytest_args(tmp_path)  # the whole ci profile, reproducers kept
    assert default == ["--loraguard-profile=ci", f"--loraguard-reproducers={tmp_path / 'reproducers'}", "-n", "2"]
    narrowed = Suite("quick", ("mlp", "gpt2"), ("f32",), 0, reproducers=False).pytest_args(tmp_path)
    assert narrowed == [
        "--loraguard-profile=quick",
        "--loraguard-zoo=mlp",
        "--loraguard-zoo=gpt2",
        "--loraguard-dtype=f32",
        "--loraguard-reproducers=off",
    ]


@pytest.mark.parametrize(
    "option, message",
    [
        (["--zoo", "mlpp"], "--zoo 'mlpp': choose from"),
        (["--profile", "fast"], "--profile 'fast': choose one of"),
        (["--workers", "-1"], "--workers -1: give a number"),
    ],
)
def test_a_misspelt_suite_option_is_refused_before_any_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], message: str
) -> None:
    envs = tmp_path / "envs"
    assert main(["matrix", "--release", "0.21.2", "--envs", str(envs), "--out", str(tmp_path), *option]) == 2
    assert message in capsys.readouterr().err
    assert not envs.exists()


def test_a_misspelt_dtype_is_refused_by_its_choices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    envs = tmp_path / "envs"
    with pytest.raises(SystemExit) as exit_:
        main(["matrix", "--release", "0.21.2", "--envs", str(envs), "--out", str(tmp_path), "--dtype", "f8"])
    assert exit_.value.code == 2 and "--dtype: invalid choice: 'f8'" in capsys.readouterr().err
    assert not envs.exists()


def test_an_environment_installed_with_the_same_inputs_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "checkout"
    project.mkdir()
    (project / "pyproject.toml").write_text("[project]\nname = 'loraguard'\n")
    rel, loraguard = release("0.21.2"), ["-e", str(project)]
    python = tmp_path / "envs" / "peft-0.21.2" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    (python.parents[1] / "loraguard-stamp.json").write_text(install_stamp(rel, loraguard, []))

    def no_uv() -> list[str]:
        raise EnvSetupError("uv was called")

    monkeypatch.setattr(environments, "uv_command", no_uv)
    assert make_env(tmp_path / "envs", rel, loraguard, []) == python  # reused: uv never called
    with pytest.raises(EnvSetupError, match="uv was called"):
        make_env(tmp_path / "envs", rel, loraguard, [], reinstall=True)
    assert install_stamp(release("0.20.0"), loraguard, []) != install_stamp(rel, loraguard, [])
    (project / "pyproject.toml").write_text("[project]\nname = 'loraguard'\ndependencies = ['numpy']\n")
    with pytest.raises(EnvSetupError, match="uv was called"):  # new dependencies or entry points: installed again
        make_env(tmp_path / "envs", rel, loraguard, [])


def test_a_known_failure_is_a_failure_of_that_release(tmp_path: Path) -> None:
    """pytest writes an xfail as a JUnit skip; in the matrix it must read as the release failing, never as a skip
    (nor hidden behind the invariant's passes)."""
    tag = "<properties><property name=\"loraguard\" value=\"('isolation', 'peft')\" /></properties>"
    junit = tmp_path / "junit.xml"
    junit.write_text(
        "<testsuites><testsuite>"
        f'<testcase name="test_zoo[isolation-peft-mlp-r4-f32]">{tag}</testcase>'
        f'<testcase name="test_zoo[isolation-peft-nested-r4-f32]">{tag}'
        '<skipped type="pytest.xfail" message="known failure: the look-alike leaks" /></testcase>'
        f'<testcase name="test_zoo[isolation-peft-gpt2-ia3-f32]">{tag}'
        '<skipped type="pytest.skip" message="needs the oracle" /></testcase>'
        "</testsuite></testsuites>"
    )
    outcomes, failures = read_junit(junit)
    assert outcomes == {"isolation": {"passed": 1, "failed": 1, "known": 1, "skipped": 1}}
    assert failures == {"isolation": ["test_zoo[isolation-peft-nested-r4-f32]"]}
    (row,) = matrix_table.rows([ReleaseResult("0.21.2", outcomes=outcomes, failures=failures)])
    assert row.cells == ["FAIL 1/2"]


def test_a_crash_keeps_the_library_frames_when_it_lives_under_a_loraguard_folder(tmp_path: Path) -> None:
    """The matrix's environments live in ~/.cache/loraguard/envs: their peft's frames must still be shown."""
    import importlib.util

    import torch

    from loraguard.backends.reference import ReferenceBackend
    from loraguard.harness.zoo import available
    from loraguard.harness.zoo_scenarios import zoo_scenarios
    from loraguard.run.in_pytest import _fail

    source = tmp_path / "loraguard" / "envs" / "site" / "fakelib.py"
    source.parent.mkdir(parents=True)
    source.write_text("def set_adapter(name):\n    raise ValueError(f'Adapter {name} not found')\n")
    spec = importlib.util.spec_from_file_location("fakelib", source)
    assert spec is not None and spec.loader is not None
    lib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lib)
    try:
        lib.set_adapter("other")
    except ValueError as err:
        crash = err
    scenario = zoo_scenarios(available(["mlp"]), [torch.float32])[0]
    with pytest.raises(pytest.fail.Exception) as failed:
        _fail("isolation", ReferenceBackend(), scenario, crash, None)
    assert f"{source}" in str(failed.value) and "set_adapter" in str(failed.value)
