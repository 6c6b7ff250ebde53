"""Under pytest-xdist the controller runs no test: it names the backends and their releases without loading them
and checks every option without torch, so a `pytest --loraguard -n 2` run imports neither peft (5-8 s of CPU) nor
torch (about 3 s) before its workers start."""

import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

import peft  # noqa: F401  (see tests/plugin/test_plugin.py: torch and peft are imported once per process)
import pytest
import torch

from loraguard.backends import BUILTIN, DISTRIBUTIONS, BackendError, describe_backend, load_backend
from loraguard.frontends.plugin import SETTINGS
from loraguard.harness.settings import RunOptions, resolve

BUILTINS = list(BUILTIN)  # each needs its DISTRIBUTIONS entry: a new built-in without one fails here


@pytest.mark.parametrize(
    ("args", "controller"),
    [
        # what xdist's pytest_cmdline_main makes of ``-n 2`` (parseconfigure stops before it; -n 0 leaves no nodes)
        (["--dist", "load", "--tx", "2*popen"], True),
        (["-n", "0"], False),
        ([], False),
        (["--dist", "load", "--tx", "2*popen", "--collect-only"], False),  # collection runs in this process
    ],
)
def test_only_an_xdist_controller_leaves_backends_unloaded(pytester: pytest.Pytester, args, controller) -> None:
    config = pytester.parseconfigure("-p", "no:cacheprovider", "--loraguard", "--loraguard-backend", "peft", *args)
    settings = config.stash[SETTINGS]
    assert settings.versions == {"peft": peft.__version__}
    assert [b.name for b in settings.backends] == ([] if controller else ["peft"])


def test_described_backends_match_the_loaded_ones() -> None:
    """Name and release read without importing the library are what the loaded backend says of itself."""
    for spec in BUILTINS:
        try:
            version(DISTRIBUTIONS[spec])
        except PackageNotFoundError:
            continue  # an optional library this environment lacks
        backend = load_backend(spec)
        assert describe_backend(spec) == (backend.name, backend.version()), spec


def test_settings_resolved_without_loading_import_no_library_and_pick_the_same_known_failures() -> None:
    code = (
        "import json, sys\n"
        "from loraguard.harness.settings import RunOptions, resolve\n"
        f"s = resolve(RunOptions(backends={BUILTINS!r}), load_backends=False)\n"
        "libs = ['torch', 'peft', 'transformers', 'torchtune', 'adapters']\n"
        "print(json.dumps({'imported': [m for m in libs if m in sys.modules], 'versions': s.versions,\n"
        "                  'known': sorted(k.source for k in s.known_failures), 'dtypes': s.dtype_names,\n"
        "                  'models': [m.name for m in s.models]}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    light = json.loads(out.splitlines()[-1])
    loaded = resolve(RunOptions(backends=BUILTINS))
    assert light["imported"] == []
    assert light["versions"] == loaded.versions
    assert light["known"] == sorted(k.source for k in loaded.known_failures)
    assert light["dtypes"] == loaded.dtype_names and light["models"] == [m.name for m in loaded.models]
    assert loaded.dtypes == [torch.float32, torch.bfloat16]  # the ci profile's, as torch's dtypes


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"zoo": ["mlp", "no-such-model"]}, "--loraguard-zoo: unknown zoo model(s) ['no-such-model']"),
        ({"dtypes": ["f8"]}, "--loraguard-dtype ['f8']: choose from ['bf16', 'f16', 'f32', 'f64']"),
        ({"fsdp_api": "fsdp3"}, "--loraguard-fsdp-api 'fsdp3': choose one of ['fsdp2', 'fsdp1']"),
        ({"profile": "fast"}, "--loraguard-profile 'fast': choose one of ['ci', 'quick', 'thorough']"),
    ],
)
def test_a_controller_refuses_a_bad_option_by_name_without_importing_torch(options: dict, message: str) -> None:
    code = (
        "import sys\n"
        "from loraguard.harness.settings import RunOptions, resolve\n"
        "try:\n"
        f"    resolve(RunOptions(backends=['peft'], **{options!r}), load_backends=False)\n"
        "except ValueError as err:\n"
        "    print(err, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert message in out and out.rstrip().endswith("False"), out


def test_a_builtin_backend_whose_library_is_missing_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(DISTRIBUTIONS, "peft", "no-such-dist-lg")
    with pytest.raises(BackendError, match="'no-such-dist-lg' is not installed"):
        describe_backend("peft")


@pytest.mark.spawns
def test_a_library_that_fails_to_import_on_the_workers_is_one_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller loads no backend, so a broken install is met on the workers: said once, as without xdist."""
    shadow = pytester.mkpydir("shadow")
    (shadow / "loralib").mkdir()
    (shadow / "loralib" / "__init__.py").write_text("raise ImportError('libfoo.so: cannot open shared object file')")
    # the workers inherit it (the controller never imports the library)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")]))
    args = ["-p", "no:cacheprovider", "--loraguard", "--loraguard-backend", "loralib", "-n", "2"]
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    said = "ERROR: loraguard: backend 'loralib': cannot import 'loraguard.backends.loralib' (libfoo.so: cannot open*"
    result.stderr.fnmatch_lines([said])
    assert result.stderr.str().count("ERROR: loraguard:") == 1
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output and "node down" not in output and "loraguard summary" not in output
