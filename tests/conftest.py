"""Shared test configuration: pytester drives the plugin in its own sessions; one torch thread per xdist worker;
tests that start interpreters or ranks run first; each test's CPU seconds (its own and its children's) are recorded
in the JUnit report (property ``cpu_s``), which benchmarks/suite_time_bench.py reads."""

import os
import resource

import pytest

pytest_plugins = ["pytester"]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: intra-op threads only contend
    import torch

    torch.set_num_threads(1)

#: Markers of tests that start interpreters or ranks (tens of seconds each, much of it waiting).
_LONG = ("spawns", "zero3", "fsdp")
_CPU_START = pytest.StashKey[float]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first, so xdist hands them out while the short ones are left to even out the workers' ends."""
    items.sort(key=lambda item: not any(item.get_closest_marker(m) for m in _LONG))


def _cpu_seconds() -> float:
    """User + system CPU of this process and of the children it has waited for (the interpreters tests start)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    item.stash[_CPU_START] = _cpu_seconds()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item):
    try:
        return (yield)
    finally:
        if _CPU_START in item.stash:  # the teardown report, written after this hook, carries it to the JUnit XML
            item.user_properties.append(("cpu_s", round(_cpu_seconds() - item.stash[_CPU_START], 2)))
