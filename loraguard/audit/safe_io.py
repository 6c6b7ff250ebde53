"""Opening files from an untrusted tree: lstat first, only regular files, non-blocking open, every read capped.

A FIFO, device or socket (or a symlink to one) under any name is never opened, so the audit cannot block on a
pipe or read `/dev/zero` forever; a symlink to a regular file is followed, as loaders do (the Hugging Face cache
is made of them). The file opened is checked to be the one stat'ed, so a swap between the two is caught.
"""

from __future__ import annotations

import io
import os
import stat
from typing import IO, TYPE_CHECKING

from loraguard.audit.rules import Finding

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: A JSON config or index larger than this is not read (real ones are kilobytes to a few megabytes).
MAX_JSON_BYTES = 64 << 20


class Unusable(Exception):
    """A file that cannot be audited at all; carries the finding that says why."""

    def __init__(self, finding: Finding):
        super().__init__(finding.message)
        self.finding = finding


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def regular_size(path: str) -> int:
    """The size of `path` if it is (or links to) a regular file; Unusable (LG001/LG005) otherwise, nothing opened."""
    try:
        link = os.lstat(path)
        st = os.stat(path) if stat.S_ISLNK(link.st_mode) else link
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None
    if not stat.S_ISREG(st.st_mode):
        via = "a symlink to " if stat.S_ISLNK(link.st_mode) else ""
        raise Unusable(Finding("LG005", path, f"{via}{_kind(st.st_mode)}: never opened, so never read"))
    return st.st_size


def open_regular(path: str) -> tuple[io.BufferedReader, int]:
    """`path` opened read-only and non-blocking, with its size, after checking it is a regular file."""
    regular_size(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot open: {err.strerror or err}")) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO or device between the stat and the open
        os.close(fd)
        raise Unusable(Finding("LG005", path, f"{_kind(st.st_mode)}: never read"))
    return os.fdopen(fd, "rb"), st.st_size


def read_capped(path: str, cap: int, rule: str) -> bytes:
    """The whole file, if it is a regular file of at most `cap` bytes; Unusable under `rule` if larger."""
    f, size = open_regular(path)
    with f:
        if size > cap:
            raise Unusable(Finding(rule, path, f"{size} bytes is more than the {cap >> 20} MiB the audit reads here"))
        data = f.read(cap + 1)
    if len(data) > cap:
        raise Unusable(Finding(rule, path, f"grew past {cap >> 20} MiB while being read"))
    return data


class CappedReader(io.RawIOBase):
    """A read-only stream over `inner` that refuses to deliver more than `limit` bytes (raises CapExceeded)."""

    def __init__(self, inner: IO[bytes], limit: int):
        super().__init__()
        self._inner, self._left, self.limit = inner, limit, limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        want = min(len(view), self._left + 1)
        data = self._inner.read(want)
        if len(data) > self._left:
            raise CapExceeded(self.limit)
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    @property
    def consumed(self) -> int:
        return self.limit - self._left


class CapExceeded(Exception):
    """More bytes than the cap came out of a stream (an inflation bomb, or a file that grew)."""

    def __init__(self, limit: int):
        super().__init__(f"more than {limit >> 20} MiB")
        self.limit = limit
