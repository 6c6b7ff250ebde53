"""The context a distributed invariant receives in its rank: its world, a shared directory, options, progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraguard.harness.distributed.world import World

if TYPE_CHECKING:
    from loraguard.backends.base import Backend

Progress = Callable[[int, str], None]


@dataclass
class RankContext:
    """What a scenario sees: its world, a directory shared by all ranks, the run's options, progress marks."""

    world: World
    workdir: Path
    options: dict[str, Any]
    progress: Progress
    _seq: int = field(default=0, repr=False)
    _library_loaded: bool = field(default=False, repr=False)

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def world_size(self) -> int:
        return self.world.world_size

    @property
    def device(self) -> str:
        return self.world.device

    def step(self, label: str) -> None:
        """Mark arrival at `label`; on a hang, ranks that never marked the step the others reached are named."""
        self._seq += 1
        self.progress(self._seq, label)

    def backend(self) -> Backend:
        """The backend under test, by the name in the run's options (``peft`` by default)."""
        from loraguard.backends import load_backend

        name = self.options.get("backend", "peft")
        if self._library_loaded:
            return load_backend(name)
        from loraguard.core.heap import importing

        with importing():  # the first load imports the library; a rank is loraguard's own process
            backend = load_backend(name)
        self._library_loaded = True
        return backend
