"""Finding backends by name: built-ins, the `loraguard.backends` entry point group, or ``module:attr``.

Importing this package imports no torch: the protocol's names (loraguard.backends.base) load on first use, so a
pytest-xdist controller names the backends and reads their releases (`describe_backend`) without torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, entry_points, version
from typing import TYPE_CHECKING, Any

from loraguard.backends.errors import BackendError, Unsupported
from loraguard.core.imports import import_user_module

if TYPE_CHECKING:
    from loraguard.backends.base import CAPABILITIES, Backend, BackendBase

BUILTIN = {
    "reference": "loraguard.backends.reference:ReferenceBackend",
    "peft": "loraguard.backends.peft:PeftBackend",
    "loralib": "loraguard.backends.loralib:LoralibBackend",
    "torchtune": "loraguard.backends.torchtune:TorchtuneBackend",
    "adapters": "loraguard.backends.adapters:AdaptersBackend",
}
#: the distribution whose release each built-in backend reports (``Backend.version()``)
DISTRIBUTIONS = {
    "reference": "loraguard",
    "peft": "peft",
    "loralib": "loralib",
    "torchtune": "torchtune",
    "adapters": "adapters",
}

__all__ = [
    "BUILTIN",
    "CAPABILITIES",
    "Backend",
    "BackendBase",
    "BackendError",
    "Unsupported",
    "describe_backend",
    "load_backend",
    "known_backends",
]


_FROM_BASE = ("CAPABILITIES", "Backend", "BackendBase")


def __getattr__(name: str) -> Any:
    """The protocol's names, from loraguard.backends.base (torch) when first asked for."""
    if name in _FROM_BASE:
        from loraguard.backends import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def known_backends() -> list[str]:
    """Names usable with ``--loraguard-backend``: built-ins and installed entry points."""
    return sorted(set(BUILTIN) | {ep.name for ep in entry_points(group="loraguard.backends")})


def load_backend(spec: str) -> Backend:
    """Resolve ``reference``, ``peft``, an entry-point name, or ``module:attr`` (a class, factory or instance)."""
    target = BUILTIN.get(spec)
    if target is None:
        eps = {ep.name: ep for ep in entry_points(group="loraguard.backends")}
        if spec in eps:
            obj = eps[spec].load()
            return _instantiate(obj, spec)
        if ":" not in spec:
            raise BackendError(f"unknown backend {spec!r}: use one of {known_backends()} or 'module:attr'")
        target = spec
    module_name, _, attr = target.partition(":")
    try:
        module = import_user_module(module_name) if target is spec else importlib.import_module(module_name)
    except ImportError as err:
        raise BackendError(
            f"backend {spec!r}: cannot import {module_name!r} ({err}); is the library installed?"
        ) from err
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise BackendError(f"backend {spec!r}: module {module_name!r} has no attribute {attr!r}") from None
    return _instantiate(obj, spec)


def describe_backend(spec: str) -> tuple[str, str]:
    """The name and release of the backend `spec` names, reading a built-in one's release from the installed
    distribution: a pytest-xdist controller reports on a run its workers make, without importing the library
    (peft with transformers is 5-8 s of CPU). Other backends are loaded, as their name is theirs to say."""
    dist = DISTRIBUTIONS.get(spec)
    if dist is None:
        backend = load_backend(spec)
        return backend.name, backend.version()
    try:
        return spec, version(dist)
    except PackageNotFoundError:
        raise BackendError(
            f"backend {spec!r}: {dist!r} is not installed; install it (pip install {dist}) or choose another backend"
        ) from None


def _instantiate(obj: object, spec: str) -> Backend:
    from loraguard.backends.base import Backend, check_capabilities

    # built-in backends import their library on first use (here, for their capabilities): a library that is
    # installed but fails to import is the user's to fix, said as such rather than as a traceback
    try:
        backend = obj() if isinstance(obj, type) or not isinstance(obj, Backend) and callable(obj) else obj
        if not isinstance(backend, Backend):
            missing = [m for m in ("name", "capabilities", "wrap", "merge", "save", "load") if not hasattr(backend, m)]
            raise BackendError(f"backend {spec!r} does not implement the Backend protocol (missing {missing})")
        check_capabilities(backend)
    except ImportError as err:
        raise BackendError(
            f"backend {spec!r}: its library fails to import ({err}); reinstall it or choose another backend"
        ) from err
    return backend
