"""One isolated environment per library release, made with uv, with torch pinned to the running build.

torch is pinned to the exact build this process runs (e.g. ``2.13.0+cpu``), so an environment can never pull
another torch (a multi-GB CUDA build); uv hard-links it from its cache, so each environment costs little disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: peft release (major, minor) from which a transformers pin applies, the pin, and why. The last entry whose
#: release is <= the one installed wins; old peft imports transformers internals that later releases removed.
COMPANIONS: list[tuple[tuple[int, int], str, str]] = [
    ((0, 8), "transformers==4.46.3", "4.46 is the oldest with Conv1D.nx (read by the reference); old peft imports it"),
    ((0, 14), "transformers==4.47.1", "contemporary with peft 0.14"),
    ((0, 15), "transformers==4.51.3", "contemporary with peft 0.15"),
    ((0, 16), "transformers==4.53.3", "contemporary with peft 0.16"),
    ((0, 17), "transformers==4.56.2", "contemporary with peft 0.17"),
    ((0, 18), "transformers==4.57.1", "contemporary with peft 0.18"),
    # transformers 5.18 removed GenerationMixin._prepare_encoder_decoder_kwargs_for_generation, which peft up to 0.20
    # patches on every seq2seq model: 0.19 and 0.20 get the newest transformers of their release date (PyPI).
    ((0, 19), "transformers==5.5.4", "newest at peft 0.19.0 and 0.19.1 (2026-04-14/16); 5.18 drops what 0.19 patches"),
    ((0, 20), "transformers==5.14.1", "newest at peft 0.20.0 (2026-07-28); 5.18 drops what peft 0.20 patches"),
    ((0, 21), "transformers", "peft 0.21 and later work with the newest transformers (no longer patch it)"),
]


class EnvSetupError(RuntimeError):
    """An environment could not be made; the message says which release and what the installer printed."""


@dataclass(frozen=True)
class Release:
    """A library release to test and the packages installed beside it."""

    version: str
    companions: tuple[str, ...]

    @property
    def requirements(self) -> list[str]:
        return [f"peft=={self.version}", *self.companions]


def parse_version(version: str) -> tuple[int, ...]:
    return tuple(int("".join(c for c in part if c.isdigit()) or 0) for part in version.split(".")[:3])


def release(version: str, overrides: dict[str, list[str]] | None = None) -> Release:
    """`version` with its companion pins: from `overrides` if given there, else from COMPANIONS."""
    if overrides and version in overrides:
        return Release(version, tuple(overrides[version]))
    key = parse_version(version)[:2]
    pins = [pin for since, pin, _ in COMPANIONS if since <= key]
    return Release(version, (pins[-1],) if pins else ())


def uv_command() -> list[str]:
    """The uv executable (on PATH or installed in this Python); a clear error if there is none."""
    found = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if found:
        return [found]
    raise EnvSetupError(
        "the release matrix makes its environments with uv, which is not installed here; "
        "install loraguard with its matrix extra (`pip install 'loraguard[matrix]'`) or put uv on PATH"
    )


def source_checkout() -> Path | None:
    """The loraguard source tree this code runs from (an editable install or a clone), or None (a wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "properties").is_dir() else None


def loraguard_requirement() -> list[str]:
    """How to install, in a release's environment, the loraguard that is running: its source tree editable, or the
    wheel, git URL or path pip recorded (PEP 610 direct_url.json), or the same version from the package index."""
    checkout = source_checkout()
    if checkout is not None:
        return ["-e", str(checkout)]
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("loraguard")
    except PackageNotFoundError:
        raise EnvSetupError("loraguard is not installed (no distribution metadata); install it with pip") from None
    text = dist.read_text("direct_url.json")
    return requirement_from(json.loads(text) if text else None, dist.version)


def requirement_from(direct_url: dict | None, version: str) -> list[str]:
    """The requirement that reinstalls what a PEP 610 record describes; None: installed from an index."""
    if direct_url is None:
        return [f"loraguard=={version}"]
    url = direct_url["url"]
    if "vcs_info" in direct_url:
        vcs = direct_url["vcs_info"]
        return [
            f"loraguard @ {vcs['vcs']}+{url}@{vcs.get('commit_id') or vcs.get('requested_revision', '')}".rstrip("@")
        ]
    if url.startswith("file://") and not Path(url.removeprefix("file://")).exists():
        raise EnvSetupError(
            f"loraguard was installed from {url}, which no longer exists; the matrix installs the same loraguard "
            "in each release's environment: reinstall it from a wheel, git URL or path that stays"
        )
    if direct_url.get("dir_info", {}).get("editable"):
        return ["-e", url.removeprefix("file://")]
    return [f"loraguard @ {url}"]


def torch_pin() -> str:
    import torch

    return f"torch=={torch.__version__}"


def find_links() -> list[str]:
    """Local wheel folders pip is told about (PIP_FIND_LINKS): uv does not read pip's settings by itself."""
    return os.environ.get("PIP_FIND_LINKS", "").split()


def make_env(root: Path, rel: Release, loraguard: list[str], links: list[str], reinstall: bool = False) -> Path:
    """Create (or bring up to date) the environment for `rel` under `root`; returns its python.

    An environment whose last install had the same inputs (`install_stamp`) is reused as it is: uv would rebuild
    an editable loraguard on every run (about half a minute per release). `reinstall` installs anyway.
    """
    env = root / f"peft-{rel.version}"
    python = env / "bin" / "python"
    stamp_file = env / "loraguard-stamp.json"
    stamp = install_stamp(rel, loraguard, links)
    if not reinstall and python.exists() and _read(stamp_file) == stamp:
        return python
    uv = uv_command()
    if not python.exists():
        _run([*uv, "venv", "--quiet", "--python", sys.executable, str(env)], rel)
    stamp_file.unlink(missing_ok=True)
    constraints = env / "loraguard-constraints.txt"
    constraints.write_text(torch_pin() + "\n")
    cmd = [*uv, "pip", "install", "--quiet", "--python", str(python), "-c", str(constraints)]
    for link in links:
        cmd += ["--find-links", link]
    _run(cmd + [*rel.requirements, *loraguard], rel)
    stamp_file.write_text(stamp)
    return python


def install_stamp(rel: Release, loraguard: list[str], links: list[str]) -> str:
    """What an environment's install depends on: the requirements, torch's pin, the wheel folders, and for a
    loraguard installed from a folder, its pyproject.toml (its dependencies and entry points); its code is read
    in place by an editable install, so a code change needs no reinstall."""
    folder = Path(loraguard[-1]) if loraguard[0] == "-e" else None
    project = folder / "pyproject.toml" if folder is not None else None
    digest = hashlib.sha256(project.read_bytes()).hexdigest() if project is not None and project.is_file() else None
    record = {"requirements": rel.requirements, "loraguard": loraguard, "torch": torch_pin(), "links": links}
    return json.dumps({**record, "pyproject_sha256": digest}, sort_keys=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _run(cmd: list[str], rel: Release) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise EnvSetupError(f"peft {rel.version}: `{' '.join(cmd)}` failed:\n{done.stderr[-3000:]}")
