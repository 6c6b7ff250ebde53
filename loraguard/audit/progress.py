"""Progress for the audit: a rich bar on stderr per large file, only when stderr is a terminal (core.progress)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from loraguard.audit.text import printable
from loraguard.core.progress import bytes_progress, on_terminal

#: Files smaller than this finish too fast for a progress bar to help.
LARGE_FILE_BYTES = 256 << 20


def terminal_progress(stream: TextIO = sys.stderr) -> Callable[[str, int], Callable[[int], None] | None] | None:
    """A progress factory for `audit_paths`, or None when `stream` is not a terminal (CI logs stay clean)."""
    if not on_terminal(stream):
        return None

    def start(label: str, total: int) -> Callable[[int], None] | None:
        if total < LARGE_FILE_BYTES:
            return None
        from rich.markup import escape

        return bytes_progress(escape(printable(label)), total, stream)  # a file name is neither markup nor control

    return start
