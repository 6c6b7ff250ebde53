"""What a backend raises: defined apart from the protocol (which imports torch), so finding a backend by name can
fail with them in a process that imports no torch (a pytest-xdist controller)."""

from __future__ import annotations


class BackendError(RuntimeError):
    """The backend could not do what was asked (distinct from an invariant violation)."""


class Unsupported(BackendError):
    """This release of the library lacks a feature the scenario needs: the check is skipped with this reason."""
