"""The wheel ships every package: pyproject lists them explicitly (properties/ is mapped into loraguard)."""

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "loraguard").rglob("__init__.py")}
    assert on_disk | {"loraguard.properties"} == listed, "add new packages to [tool.setuptools] packages"
    assert (ROOT / "properties" / "__init__.py").exists()
