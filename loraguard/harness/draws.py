"""Drawn examples that depend on the seed alone: Hypothesis's pool of constants read from local source left out.

Hypothesis (6.131 and later) draws, about one primitive in twenty, a constant read from the source of the "local"
modules imported so far: not site-packages, so a user's conftest and project modules, and loraguard itself when it
is installed editable. The derandomized ci profile therefore drew other examples in every project and after every
edit of local code, and the known failures listed for a release (tuned on one set of draws) met other examples
elsewhere: a run green here could be red in a user's CI. While loraguard draws, that pool is empty; Hypothesis's
own global constants stay, so a Hypothesis release draws the same examples in every project.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def seed_only() -> Iterator[None]:
    """Hypothesis draws without constants from local modules for the block, then as before (its cache of allowed
    constants is cleared both ways, so no constant drawn here or there leaks across). On a Hypothesis without the
    pool nothing changes; tests/test_draws.py fails if a release moves it."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # a Hypothesis before the pool existed
        yield
        return
    local = getattr(providers, "_get_local_constants", None)
    if local is None:
        yield
        return
    empty = Constants()
    providers._get_local_constants = lambda: empty
    providers.CONSTANTS_CACHE.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = local
        providers.CONSTANTS_CACHE.cache.clear()
