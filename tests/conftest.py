"""Shared test configuration: pytester drives the plugin in its own sessions; one torch thread per xdist worker;
tests that start interpreters or ranks run first."""

import os

import pytest

pytest_plugins = ["pytester"]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: intra-op threads only contend
    import torch

    torch.set_num_threads(1)

#: Markers of tests that start interpreters or ranks (tens of seconds each, much of it waiting).
_LONG = ("spawns", "zero3", "fsdp")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first, so xdist hands them out while the short ones are left to even out the workers' ends."""
    items.sort(key=lambda item: not any(item.get_closest_marker(m) for m in _LONG))
