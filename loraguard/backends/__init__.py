"""Finding backends by name: built-ins, the `loraguard.backends` entry point group, or ``module:attr``."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from loraguard.backends.base import CAPABILITIES, Backend, BackendBase, BackendError, Unsupported, check_capabilities
from loraguard.core.imports import import_user_module

BUILTIN = {
    "reference": "loraguard.backends.reference:ReferenceBackend",
    "peft": "loraguard.backends.peft:PeftBackend",
    "loralib": "loraguard.backends.loralib:LoralibBackend",
    "torchtune": "loraguard.backends.torchtune:TorchtuneBackend",
    "adapters": "loraguard.backends.adapters:AdaptersBackend",
}

__all__ = [
    "BUILTIN",
    "CAPABILITIES",
    "Backend",
    "BackendBase",
    "BackendError",
    "Unsupported",
    "load_backend",
    "known_backends",
]


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


def _instantiate(obj: object, spec: str) -> Backend:
    backend = obj() if isinstance(obj, type) or not isinstance(obj, Backend) and callable(obj) else obj
    if not isinstance(backend, Backend):
        missing = [m for m in ("name", "capabilities", "wrap", "merge", "save", "load") if not hasattr(backend, m)]
        raise BackendError(f"backend {spec!r} does not implement the Backend protocol (missing {missing})")
    check_capabilities(backend)
    return backend
