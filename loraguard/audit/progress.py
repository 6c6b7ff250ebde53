"""A one-line progress counter on stderr, for large files only and only when stderr is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

#: Files smaller than this finish too fast for a progress line to help.
LARGE_FILE_BYTES = 256 << 20


def terminal_progress(stream: TextIO = sys.stderr) -> Callable[[str, int], Callable[[int], None] | None] | None:
    """A progress factory for `audit_paths`, or None when `stream` is not a terminal (CI logs stay clean)."""
    if not stream.isatty():
        return None

    def start(label: str, total: int) -> Callable[[int], None] | None:
        if total < LARGE_FILE_BYTES:
            return None
        done = [0]

        def advance(n: int) -> None:
            done[0] += n
            end = "\n" if done[0] >= total else ""
            stream.write(f"\r{label}: {100 * done[0] // total:3d}% of {total >> 20} MiB{end}")
            stream.flush()

        return advance

    return start
