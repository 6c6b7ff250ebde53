"""A usage error only an xdist worker can see, shown by the controller as pytest shows its own: one line, exit 4.

Under ``-n N`` the controller checks the options without loading the backends (docs/architecture.md), so a
library that is installed but fails to import (peft against a transformers it does not support, say) or a
``--loraguard-model`` whose module raises is met first on the workers. Raised there, it came back as each
worker's xdist traceback, an empty summary table and "no tests ran" (exit 5). Instead the worker runs no test
and hands the message back in its ``workeroutput``; the controller prints it once and exits with pytest's usage
error status.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest

#: the key of a worker's ``workeroutput`` that carries the message to the controller
KEY = "loraguard_usage_error"


class WorkerUsageError:
    """On a worker whose options failed: collect nothing, and send the message back when the session ends."""

    def __init__(self, config: pytest.Config, message: str) -> None:
        config.workeroutput[KEY] = message  # type: ignore[attr-defined]  # set by xdist on its workers

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        config.hook.pytest_deselected(items=list(items))
        items.clear()


class ControllerRelay:
    """On the controller: keep the first worker's usage error, then report it as pytest reports its own."""

    def __init__(self) -> None:
        self.message: str | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        message = getattr(node, "workeroutput", None) or {}
        if self.message is None and message.get(KEY):
            self.message = str(message[KEY])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.message is not None:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR

    def pytest_unconfigure(self) -> None:
        if self.message is not None:
            print(f"ERROR: {self.message}", file=sys.stderr)
