"""freeze_heap and importing (loraguard.core.heap): garbage is collected before the survivors are frozen, and the
collector is paused only for the block and restored as it was."""

from __future__ import annotations

import gc
import weakref

import pytest

from loraguard.core.heap import freeze_heap, importing


class _Node:
    """A container that can sit in a reference cycle (only the cyclic collector frees it) and be weakly referenced."""

    def __init__(self) -> None:
        self.me = self


def _tracked(obj: object) -> bool:
    """Whether the collector's generations hold `obj` (a frozen object is in none of them)."""
    return any(o is obj for o in gc.get_objects())


def test_freeze_heap_collects_dead_cycles_then_freezes_the_living() -> None:
    alive, dead = _Node(), _Node()
    dead_ref = weakref.ref(dead)
    del dead
    assert _tracked(alive) and dead_ref() is not None
    freeze_heap()
    assert dead_ref() is None, "a cycle that was garbage already was frozen, never to be reclaimed"
    assert not _tracked(alive), "an object alive at the freeze is still walked by every full collection"


@pytest.mark.parametrize("enabled", [True, False])
def test_importing_pauses_the_collector_for_the_block_only_and_freezes_what_it_made(enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()
    try:
        with importing():
            assert not gc.isenabled()
            made = _Node()
        assert gc.isenabled() is enabled
        assert not _tracked(made)
        with pytest.raises(ImportError), importing():
            raise ImportError("no module named 'nope'")
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
