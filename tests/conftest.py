"""Shared test configuration: pytester drives the plugin in its own sessions; one torch thread per xdist worker;
the slowest tests run first; the heap is frozen before each test; each test's CPU seconds (its own and its
children's) are recorded in the JUnit report (property ``cpu_s``), which benchmarks/suite_time_bench.py reads."""

import json
import os
import resource
from pathlib import Path

import pytest

from loraguard.core.heap import freeze_heap

pytest_plugins = ["pytester"]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: intra-op threads only contend
    import torch

    torch.set_num_threads(1)

#: Wall seconds of the tests over a second in the last `benchmarks/suite_time_bench.py --record` run.
_DURATIONS: dict[str, float] = json.loads(Path(__file__).with_name("durations.json").read_text())
#: Markers of tests that start interpreters or ranks (tens of seconds each, much of it waiting); such a test that no
#: recorded run lists (new, or under a second) counts as a few seconds: ahead of the hundreds of short tests.
_LONG = ("spawns", "zero3", "fsdp")
_LONG_UNRECORDED_S = 5.0
_CPU_START = pytest.StashKey[float]()


def _expected_seconds(item: pytest.Item) -> float:
    if item.nodeid in _DURATIONS:
        return _DURATIONS[item.nodeid]
    return _LONG_UNRECORDED_S if any(item.get_closest_marker(m) for m in _LONG) else 0.0


def _shares_a_module_fixture(item: pytest.Item) -> bool:
    """Uses a fixture set up once per module (or class), which splitting the module's tests would set up again."""
    info = getattr(item, "_fixtureinfo", None)
    defs = info.name2fixturedefs.values() if info is not None else []
    return any(d[-1].scope in ("module", "class", "package") for d in defs if d)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slowest first (`make test` hands them out one at a time: --maxschedchunk 1), so the short tests left at the
    end even out the two workers' finish. A module whose tests share a module fixture moves as one block, at its
    slowest test's place; ties keep pytest's order."""
    cost = {item.nodeid: _expected_seconds(item) for item in items}
    block: dict[str, float] = {}
    for item in items:
        if _shares_a_module_fixture(item):
            block[item.location[0]] = max(block.get(item.location[0], 0.0), cost[item.nodeid])
    items.sort(key=lambda item: -block.get(item.location[0], cost[item.nodeid]))


def _cpu_seconds() -> float:
    """User + system CPU of this process and of the children it has waited for (the interpreters tests start)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    # What earlier tests left alive (torch, transformers, peft, cached models) is frozen out of the full collections'
    # walk: about 15 CPU s of the suite's collections. A user's pytest process is never frozen (loraguard.core.heap).
    freeze_heap()
    item.stash[_CPU_START] = _cpu_seconds()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    try:
        return (yield)
    finally:
        if _CPU_START in item.stash:  # the teardown report, written after this hook, carries it to the JUnit XML
            item.user_properties.append(("cpu_s", round(_cpu_seconds() - item.stash[_CPU_START], 2)))
