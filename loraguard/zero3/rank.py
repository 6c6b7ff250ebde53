"""Inside one rank: the context a scenario receives, running scenarios in order, and recording each outcome.

A scenario is a callable taking a `RankContext`, named by an invariant ID (see `loraguard.zero3.invariants`),
``module:function`` or ``path/to/file.py:function``. It passes by returning, fails by raising
`InvariantViolation`, is skipped by raising `Unsupported`; any other exception is an error.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraguard.zero3.world import World

Progress = Callable[[int, str], None]


@dataclass
class RankContext:
    """What a scenario sees: its world, a directory shared by all ranks, the run's options, progress marks."""

    world: World
    workdir: Path
    options: dict[str, Any]
    progress: Progress
    _seq: int = field(default=0, repr=False)

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

    def backend(self):
        """The backend under test, by the name in the run's options (``peft`` by default)."""
        from loraguard.backends import load_backend

        return load_backend(self.options.get("backend", "peft"))


def resolve(name: str) -> Callable[[RankContext], None]:
    """An invariant ID, ``module:function`` or ``file.py:function`` to the callable it names."""
    target, sep, attr = name.rpartition(":")
    if not sep:
        from loraguard.zero3.invariants import INVARIANTS

        if name not in INVARIANTS:
            raise KeyError(f"unknown scenario {name!r}: use an invariant ID ({sorted(INVARIANTS)}), "
                           "'module:function' or 'path/to/file.py:function'")
        return INVARIANTS[name].run
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(target).stem, target)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load scenario file {target}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    return getattr(module, attr)


def run_scenario(ctx: RankContext, name: str) -> dict[str, Any]:
    """Run one scenario in this rank and describe how it ended (status, message, traceback, duration)."""
    from loraguard.backends.base import Unsupported
    from loraguard.invariants.checks import InvariantViolation

    start = time.perf_counter()
    ctx.step(f"{name}: start")
    status, message, tb = "passed", "", ""
    try:
        resolve(name)(ctx)
    except Unsupported as err:
        status, message = "skipped", str(err)
    except InvariantViolation as err:
        status, message, tb = "failed", str(err), traceback.format_exc()
    except BaseException as err:  # noqa: BLE001 - every exception is reported with its rank and traceback
        status, message, tb = "error", f"{type(err).__name__}: {err}", traceback.format_exc()
    ctx.step(f"{name}: end")
    return {"scenario": name, "rank": ctx.rank, "status": status, "message": message, "traceback": tb,
            "duration": time.perf_counter() - start, "pid": os.getpid()}
