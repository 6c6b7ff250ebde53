"""`loraguard matrix` from an installed wheel: each release's environment gets the loraguard that runs, from where
pip recorded it came (PEP 610 direct_url.json), and a missing uv is a clear message, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loraguard.gating.environments import EnvSetupError, requirement_from

ROOT = Path(__file__).resolve().parents[2]


def test_the_requirement_follows_where_loraguard_was_installed_from(tmp_path: Path) -> None:
    wheel = tmp_path / "loraguard-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert requirement_from(None, "0.1.0") == ["loraguard==0.1.0"]  # from an index
    assert requirement_from({"url": wheel.as_uri(), "archive_info": {}}, "0.1.0") == [f"loraguard @ {wheel.as_uri()}"]
    git = {"url": "https://example.invalid/lg.git", "vcs_info": {"vcs": "git", "commit_id": "abc123"}}
    assert requirement_from(git, "0.1.0") == ["loraguard @ git+https://example.invalid/lg.git@abc123"]
    editable = {"url": tmp_path.as_uri(), "dir_info": {"editable": True}}
    assert requirement_from(editable, "0.1.0") == ["-e", str(tmp_path)]
    with pytest.raises(EnvSetupError, match="no longer exists; the matrix installs the same loraguard"):
        requirement_from({"url": (tmp_path / "gone.whl").as_uri(), "archive_info": {}}, "0.1.0")


def _installed_wheel(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """loraguard built as a wheel and pip-installed (no deps: this environment has them) into its own directory."""
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(wheels)], check=True)
    wheel = next(wheels.glob("loraguard-*.whl"))
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    env = {**os.environ, "PYTHONPATH": str(target), "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"}
    return wheel, env


@pytest.mark.spawns
def test_from_a_wheel_the_matrix_installs_that_wheel_and_says_when_uv_is_missing(tmp_path: Path) -> None:
    wheel, env = _installed_wheel(tmp_path)
    probe = (
        "import json, loraguard.gating.environments as e; print(json.dumps([e.__file__, e.loraguard_requirement()]))"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True)
    where, requirement = json.loads(done.stdout)
    assert where.startswith(str(tmp_path / "site")), "the wheel's copy must be the one imported"
    assert requirement == [f"loraguard @ {wheel.resolve().as_uri()}"]
    # uv neither on PATH nor beside this Python: a message that says what to install, exit 2
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "python").symlink_to(sys.executable)
    env["PATH"] = f"{bare}{os.pathsep}/usr/bin:/bin"
    code = "import sys, loraguard.gating.environments as e; sys.executable = sys.argv[1]; " + (
        "from loraguard.frontends.cli import main; sys.exit(main(['matrix', '--release', '0.21.2', '--out', 'o']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(bare / "python")], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    if (Path("/usr/bin/uv")).exists():
        pytest.skip("uv is installed system-wide here")
    assert done.returncode == 2, done.stderr
    assert "pip install 'loraguard[matrix]'" in done.stderr and "Traceback" not in done.stderr
