"""Importing a user's ``module:attr`` the way pytest finds a user's modules, from any entry point.

`pytest` puts the rootdir on ``sys.path`` and ``python -m`` puts the working directory there, but a console script
(``loraguard snapshot --model mypkg.models:tiny``) does neither, so a module of the project being tested would
not import from its own root. `import_user_module` retries such a module from the working directory and `roots`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType


def import_user_module(name: str, roots: Iterable[Path] = ()) -> ModuleType:
    """Import `name`; if it (not something it imports) is missing, retry with the working directory and `roots`
    at the front of ``sys.path``. Raises ImportError whose message says where it looked."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
            raise  # the module exists but one of its own imports is missing: that is the real error
    searched = []
    for root in [Path.cwd(), *roots]:
        path = str(root.resolve())
        searched.append(path)
        if path not in sys.path:
            sys.path.insert(0, path)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is None or not (name == err.name or name.startswith(err.name + ".")):
            raise
        where = ", ".join(dict.fromkeys(searched))
        raise ModuleNotFoundError(
            f"No module named {err.name!r} (looked in the installed packages and in {where})", name=err.name
        ) from None
