"""Progress for long commands, drawn by rich on stderr: only on a terminal (CI logs stay clean), NO_COLOR respected.

`steps` wraps a loop over known items (scenarios, releases, sections); `bytes_progress` is for reading big files.
Everything here is a no-op when stderr is not a terminal, so commands call it unconditionally.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, ProgressColumn


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether progress should be drawn on `stream` (default stderr): a terminal that is not TERM=dumb."""
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("TERM") != "dumb"


def _progress(stream: TextIO, *columns_extra: ProgressColumn) -> Progress:
    """A transient rich Progress on `stream`; rich itself drops colour when NO_COLOR is set."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=stream, no_color="NO_COLOR" in os.environ or None)
    columns = [TextColumn("{task.description}"), BarColumn(), *columns_extra, TimeElapsedColumn()]
    return Progress(*columns, console=console, transient=True)


@contextmanager
def steps(title: str, total: int, stream: TextIO | None = None) -> Iterator[Callable[[str], None]]:
    """Yields ``step(label)``: call it as each of `total` items starts; the bar shows "title: label  i/total"."""
    stream = stream or sys.stderr
    if not on_terminal(stream):
        yield lambda label: None
        return
    from rich.progress import MofNCompleteColumn

    with _progress(stream, MofNCompleteColumn()) as bar:
        task = bar.add_task(title, total=total)
        started = [0]

        def step(label: str) -> None:
            bar.update(task, completed=started[0], description=f"{title}: {label}")
            started[0] += 1

        yield step
        bar.update(task, completed=total)


def bytes_progress(label: str, total: int, stream: TextIO | None = None) -> Callable[[int], None] | None:
    """``advance(n)`` for reading `total` bytes, drawn until the total is reached; None when not on a terminal."""
    stream = stream or sys.stderr
    if not on_terminal(stream):
        return None
    from rich.progress import DownloadColumn

    bar = _progress(stream, DownloadColumn())
    task = bar.add_task(label, total=total)
    bar.start()
    done = [0]

    def advance(n: int) -> None:
        done[0] += n
        bar.update(task, completed=done[0])
        if done[0] >= total:
            bar.stop()

    return advance
