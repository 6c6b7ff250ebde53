"""Which files of a tree a loader would read, and how the audit treats each: classified by name, then by content.

Every entry at any depth gets a kind. Names are compared case-insensitively (`pytorch_model.BIN` is a pickle),
and a file whose name says nothing is sniffed: a zip or tar archive, a pickle protocol header, or a complete
pickle that imports something is scanned as a pickle, whatever it is called. Special files are never opened.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from loraguard.audit.pickle_files import NPY_MAGIC, SEVEN_ZIP_MAGIC, ZIP_MAGIC
from loraguard.audit.pickle_scan import scan_pickle
from loraguard.audit.rules import Finding
from loraguard.audit.safe_io import Unusable, open_regular
from loraguard.core.config import CONFIG_NAME

INDEX_SUFFIX = ".safetensors.index.json"
#: Names torch.load, pickle.load, joblib and friends are pointed at (compared lower-case).
PICKLE_SUFFIXES = (
    ".bin",
    ".pt",
    ".pth",
    ".pkl",
    ".pickle",
    ".ckpt",
    ".joblib",
    ".dill",
    ".pck",
    ".pyt",
    ".npy",
    ".npz",
)
MAX_DEPTH = 32
MAX_ENTRIES = 100_000
#: Bytes read from a file whose name says nothing, to see if a loader would take it for a pickle or archive.
SNIFF_BYTES = 64 << 10

ADAPTER, SAFETENSORS, INDEX, PICKLE, JSON, CONFIG, SKIP = (
    "adapter",
    "safetensors",
    "index",
    "pickle",
    "json",
    "config",
    "skip",
)


@dataclass(frozen=True)
class Entry:
    """One file and what the audit does with it (`reason` says why for a skipped one)."""

    path: str
    kind: str
    reason: str = ""


def kind_by_name(name: str) -> str | None:
    """The kind a file's name alone decides, or None when only its content can tell."""
    lower = name.lower()
    if name == CONFIG_NAME:
        return CONFIG
    if lower.endswith(INDEX_SUFFIX):
        return INDEX
    if lower.endswith(".safetensors"):
        return SAFETENSORS
    if lower.endswith(PICKLE_SUFFIXES):
        return PICKLE
    if lower.endswith(".json"):
        return JSON
    return None


def classify(path: str) -> Entry:
    """The kind of one regular or special file; Unusable for a special file whose name a loader reads."""
    name = os.path.basename(path)
    kind = kind_by_name(name)
    if kind == JSON:
        return Entry(path, SKIP, "JSON data other than an adapter config or shard index: no loader runs code from it")
    try:
        f, _ = open_regular(path)
    except Unusable as err:
        if kind is None and err.finding.rule == "LG005":
            return Entry(path, SKIP, err.finding.message)
        raise
    if kind is not None:
        f.close()
        return Entry(path, kind)
    try:
        with f:
            head = f.read(SNIFF_BYTES)
    except OSError as err:  # EAGAIN from a file that only looks regular (/proc), or an I/O error
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None
    if _looks_loadable(head):
        return Entry(path, PICKLE)
    return Entry(path, SKIP, "not a weights, pickle, archive or config file, by name and by content")


def _looks_loadable(head: bytes) -> bool:
    """A zip, tar or 7z archive, a numpy array, a pickle protocol header, or a complete pickle that imports."""
    if head.startswith((ZIP_MAGIC, NPY_MAGIC, SEVEN_ZIP_MAGIC)) or head[257:262] == b"ustar":
        return True
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return True
    import io

    try:
        one = scan_pickle(io.BytesIO(head))
    except EOFError:
        return False
    return one.error is None and bool(one.imports)


def walk(root: str, outside: list[str]) -> Iterator[tuple[str, list[str]]]:
    """(directory, sorted file names) for `root` and every directory below it, symlinked ones once each.

    Symlinks to directories outside `root` are not followed: they are appended to `outside`. Raises Unusable
    (LG006) past MAX_DEPTH levels or MAX_ENTRIES entries, after yielding what came before.
    """
    seen: set[tuple[int, int]] = set()
    entries = 0
    stack = [(root, 0)]
    top = os.path.realpath(root)
    while stack:
        directory, depth = stack.pop()
        try:
            st = os.stat(directory)
            names = sorted(os.listdir(directory))
        except OSError as err:
            raise Unusable(Finding("LG001", directory, f"cannot list: {err.strerror or err}")) from None
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        entries += len(names)
        if entries > MAX_ENTRIES:
            raise Unusable(Finding("LG006", root, f"more than {MAX_ENTRIES} entries; the rest was not audited"))
        files, subdirs = [], []
        for name in names:
            path = os.path.join(directory, name)
            if not _is_dir(path):
                files.append(name)
            elif os.path.islink(path) and os.path.commonpath([top, os.path.realpath(path)]) != top:
                outside.append(path)  # a loader reading this checkpoint does not wander out of it; neither do we
            else:
                subdirs.append(path)
        yield directory, files
        if subdirs and depth + 1 > MAX_DEPTH:
            raise Unusable(Finding("LG006", directory, f"deeper than {MAX_DEPTH} levels; the rest was not audited"))
        stack += [(d, depth + 1) for d in reversed(subdirs)]


def _is_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False  # a dangling symlink or loop: classified (and reported) as a file
