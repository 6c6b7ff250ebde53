"""Inside one rank: resolving a scenario by name, running it, and describing how it ended.

A scenario is a callable taking a `RankContext`, named by an invariant ID (see `loraguard.invariants.zero3`),
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
from pathlib import Path
from typing import Any

from loraguard.harness.distributed.context import RankContext


def resolve(name: str) -> Callable[[RankContext], None]:
    """An invariant ID, ``module:function`` or ``file.py:function`` to the callable it names."""
    target, sep, attr = name.rpartition(":")
    if not sep:
        from loraguard.invariants.registry import DISTRIBUTED_KINDS, all_invariants

        distributed = {i: inv for kind in DISTRIBUTED_KINDS for i, inv in all_invariants(kind).items()}
        if name not in distributed:
            raise KeyError(
                f"unknown scenario {name!r}: use an invariant ID ({sorted(distributed)}), "
                "'module:function' or 'path/to/file.py:function'"
            )
        return distributed[name].check
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
    return {
        "scenario": name,
        "rank": ctx.rank,
        "status": status,
        "message": message,
        "traceback": tb,
        "duration": time.perf_counter() - start,
        "pid": os.getpid(),
    }
