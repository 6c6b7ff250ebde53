"""Long-lived objects kept out of the cyclic garbage collector's full passes, in processes loraguard owns.

torch, transformers and peft leave millions of long-lived objects, and each full collection (Python's own, and
DeepSpeed's explicit ``gc.collect()`` per engine) walks all of them: 0.3-0.6 s each, a quarter of a ZeRO-3 rank's
CPU (docs/suite-time.md). Used by the `loraguard` commands and the ranks, never in a user's pytest process, where
frozen objects would vanish from the ``gc.get_objects()`` a leak test may rely on.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


def freeze_heap() -> None:
    """Collect what is garbage now, then move every object still alive to the collector's permanent generation.

    Frozen objects are still freed by reference counting; only a reference cycle among them that becomes garbage
    later is never reclaimed, and collecting first leaves none that is garbage already.
    """
    gc.collect()
    gc.freeze()


@contextmanager
def importing() -> Iterator[None]:
    """Run a block that mostly imports (a backend and its library) with the collector paused, then freeze the heap:
    what an import allocates stays alive, so collecting during it only walks the growing heap again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
        freeze_heap()
