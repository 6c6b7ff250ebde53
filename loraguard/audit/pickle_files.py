"""Every pickle `torch.load(weights_only=False)` would run from one file, found as torch finds it, then scanned.

torch/serialization.py reads from offset 0: a file starting with a zip local header (``PK\\x03\\x04``) is a zip
archive whose ``<prefix>/data.pkl`` it unpickles (the member found case-insensitively; ``constants.pkl`` makes it
a TorchScript archive for `torch.jit.load`). Any other file is first tried as a legacy tar archive (members
``storages``, ``tensors``, ``pickle``), then read as torch's legacy format, a chain of pickles from offset 0:
magic number, protocol version, sys info, the object, storage keys. A zip appended to a pickle is scanned too,
since zip readers find archives from the end. Every read is capped; a member is never inflated without bound.
numpy's ``.npy`` (and the ``.npy`` members of an ``.npz``) hold a pickle after the header when the array holds
Python objects, which ``np.load(allow_pickle=True)`` runs; that pickle is scanned too.
"""

from __future__ import annotations

import ast
import io
import os
import struct
import tarfile
import zipfile
from typing import IO

from loraguard.audit.pickle_scan import OnePickle, PickleScan, scan_pickle
from loraguard.audit.safe_io import CapExceeded, CappedReader, open_regular

#: torch's legacy magic number, the first pickle of the legacy format.
MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
#: magic, protocol version, sys info, the object, storage keys.
LEGACY_PICKLES = 5
ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
SEVEN_ZIP_MAGIC = b"7z\xbc\xaf\x27\x1c"
_MAX_NPY_HEADER = 1 << 20
#: A compressed member may inflate to this or 16x its compressed size, whichever is more, and no further.
INFLATE_CAP = 64 << 20
#: Compression methods Python can read: stored, deflate, bzip2, lzma (torch itself reads only the first two).
_READABLE_COMPRESSION = {0, 8, 12, 14}
#: Bytes per element of torch's legacy storage classes, for walking a legacy tar's `storages` member.
_ELEMENT_BYTES = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}
_MAX_RECORDS = 1 << 20
_MAX_TAR_MEMBERS = 1024


def scan_file(path: str) -> PickleScan:
    """Scan every pickle torch would run from `path`; problems (rule, message) are collected, not raised."""
    f, _ = open_regular(path)
    scan = PickleScan()
    with f:
        head = f.read(8)
        f.seek(0)
        if head.startswith(ZIP_MAGIC):
            _scan_zip(f, scan, required=True)
            return scan
        if not head:
            scan.problems.append(("LG403", "empty file: not a pickle or torch archive"))
            return scan
        if head.startswith(NPY_MAGIC):
            _scan_npy(f, scan)
            return scan
        if head.startswith(SEVEN_ZIP_MAGIC):
            scan.problems.append(("LG406", "a 7z archive: torch cannot load it and its members are not scanned"))
            return scan
        is_tar = _scan_tar(f, scan)
        f.seek(0)
        _scan_chain(f, scan, strict=not is_tar)  # a tar that is also a pickle: pickle.load would run that
        f.seek(0)
        if zipfile.is_zipfile(f):
            f.seek(0)
            _scan_zip(f, scan, required=False, note="a zip archive appended at the end: ")
    return scan


def _add(scan: PickleScan, stream: IO[bytes], member: str, keep_error: bool = True) -> OnePickle:
    """Scan one pickle into `scan` (EOFError if no byte is left); a parse error becomes an LG403 problem."""
    one = scan_pickle(stream, member)
    scan.imports += one.imports
    scan.calls += one.calls
    scan.pickles += one.error is None or keep_error
    if one.error and keep_error:
        where = f"member {member!r}" if member else "the file"
        scan.problems.append(("LG403", f"pickle #{scan.pickles} of {where} cannot be parsed ({one.error})"))
    return one


def _scan_chain(stream: IO[bytes], scan: PickleScan, member: str = "", strict: bool = True) -> None:
    """torch's legacy format: the first pickle always runs; the next four only after the magic number.

    Not `strict`: bytes that are not a pickle are no problem (a tar archive's header), only their imports count.
    """
    try:
        first = _add(scan, stream, member, keep_error=strict)
    except EOFError:
        if strict:
            scan.problems.append(("LG403", "no pickle at the start of the file"))
        return
    legacy = first.error is None and first.literal == MAGIC_NUMBER
    if first.error or not strict and not first.imports:
        return
    for _ in range(LEGACY_PICKLES - 1):
        # After a first pickle that is not the magic number torch stops, so what follows is trailing bytes;
        # their imports are still reported (another loader may read on), an unparseable rest is not a problem.
        try:
            one = _add(scan, stream, member, keep_error=legacy)
        except EOFError:
            if legacy:
                scan.problems.append(("LG403", "legacy torch file ends before its five pickles"))
            return
        if one.error:
            return


def _scan_zip(f: IO[bytes], scan: PickleScan, required: bool, note: str = "") -> None:
    """Every ``*.pkl`` member, names compared case-insensitively as torch's zip reader does."""
    try:
        archive = zipfile.ZipFile(f)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        if required:
            scan.problems.append(("LG403", f"damaged zip archive ({str(err)[:120]})"))
        return
    with archive:
        members = [i for i in archive.infolist() if i.filename.lower().endswith((".pkl", ".npy"))]
        if not members and required:
            scan.problems.append(("LG403", "a zip archive without a data.pkl member is not a torch checkpoint"))
            members = [i for i in archive.infolist() if _member_is_pickle(archive, i)]  # a pickle by another name
        if any(os.path.basename(i.filename.lower()) == "constants.pkl" for i in members):
            scan.problems.append(
                (
                    "LG406",
                    f"{note}a TorchScript archive: torch.load hands it to torch.jit.load; its code is not audited",
                )
            )
        for info in members:
            _scan_member(archive, info, scan, note)


def _scan_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, scan: PickleScan, note: str) -> None:
    name = info.filename
    if info.flag_bits & 0x1:
        scan.problems.append(("LG404", f"{note}member {name!r} is encrypted: it cannot be scanned"))
        return
    if info.compress_type not in _READABLE_COMPRESSION:
        scan.problems.append(
            ("LG404", f"{note}member {name!r} uses compression method {info.compress_type}, which cannot be read")
        )
        return
    cap = info.compress_size if info.compress_type == 0 else max(INFLATE_CAP, 16 * info.compress_size)
    try:
        with archive.open(info) as raw:
            stream = io.BufferedReader(CappedReader(raw, cap), 1 << 16)
            if name.lower().endswith(".npy"):
                _scan_npy(stream, scan, name)
            else:
                _scan_chain(stream, scan, name)
    except CapExceeded:
        scan.problems.append(("LG405", f"{note}member {name!r} inflates past {cap >> 20} MiB: not scanned further"))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as err:
        scan.problems.append(("LG404", f"{note}member {name!r} cannot be read ({str(err)[:120]})"))


def _member_is_pickle(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bool:
    """A member that starts with a pickle protocol header (only asked of zips that are not torch archives)."""
    if info.flag_bits & 0x1 or info.compress_type not in _READABLE_COMPRESSION:
        return False
    try:
        with archive.open(info) as raw:
            head = raw.read(2)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError):
        return False
    return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


def _scan_npy(stream: IO[bytes], scan: PickleScan, member: str = "") -> None:
    """A numpy array file: a pickle follows the header when its dtype holds Python objects ('O')."""
    where = f"member {member!r}" if member else "the file"
    head = stream.read(10)
    if len(head) < 10 or not head.startswith(NPY_MAGIC) or head[6] not in (1, 2, 3):
        scan.problems.append(("LG403", f"{where} is not a readable .npy array"))
        return
    if head[6] == 1:
        (length,) = struct.unpack("<H", head[8:10])
    else:
        (length,) = struct.unpack("<I", head[8:10] + stream.read(2))
    if length > _MAX_NPY_HEADER:
        scan.problems.append(("LG405", f"{where}: a {length}-byte .npy header is past the 1 MiB the audit reads"))
        return
    try:
        header = ast.literal_eval(stream.read(length).decode("latin-1"))
        descr = header["descr"]
    except (ValueError, SyntaxError, TypeError, KeyError, RecursionError, MemoryError):
        scan.problems.append(("LG403", f"{where}: its .npy header is not the dict numpy writes"))
        return
    if "O" in repr(descr):
        _scan_chain(stream, scan, member)
    elif not scan.pickles:
        scan.nothing_runs = "a numpy array without Python objects: np.load runs no code from it"


def _scan_tar(f: IO[bytes], scan: PickleScan) -> bool:
    """torch's legacy tar format (tried first on every non-zip file): False if `f` is not a tar archive."""
    try:
        tar = tarfile.open(fileobj=f, mode="r:")
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return False
    with tar:
        members: dict[str, tarfile.TarInfo] = {}
        try:
            for count, info in enumerate(tar):
                if count >= _MAX_TAR_MEMBERS:
                    scan.problems.append(("LG405", f"tar archive has more than {_MAX_TAR_MEMBERS} members"))
                    return True
                members.setdefault(info.name, info)
        except (tarfile.TarError, OSError, ValueError, EOFError) as err:
            scan.problems.append(("LG403", f"damaged tar archive ({str(err)[:120]})"))
            return True
        if not {"storages", "tensors", "pickle"} & members.keys():
            scan.nothing_runs = "a tar archive without torch's members: torch.load runs nothing from it"
        for name in ("storages", "tensors", "pickle"):
            member = members.get(name)
            if member is None:
                continue
            if not member.isreg():
                scan.problems.append(("LG406", f"tar member {name!r} is a link or special file, not scanned"))
                continue
            stream = tar.extractfile(member)
            if stream is None:
                continue
            with stream:
                try:
                    if name == "pickle":
                        _add(scan, stream, name)
                    else:
                        _scan_records(stream, scan, name)
                except (EOFError, _RecordError, struct.error) as err:
                    scan.problems.append(("LG406", f"tar member {name!r} cannot be walked as torch writes it ({err})"))
    return True


class _RecordError(ValueError):
    pass


def _scan_records(stream: IO[bytes], scan: PickleScan, member: str) -> None:
    """A legacy tar's `storages` or `tensors` member: a count, then a pickle and raw bytes per record."""
    count = _add(scan, stream, member).literal
    if not isinstance(count, int) or not 0 <= count <= _MAX_RECORDS:
        raise _RecordError("its record count is not a plain integer")
    for _ in range(count):
        before = len(scan.imports)
        if _add(scan, stream, member).error:
            raise _RecordError("a record's pickle cannot be parsed")
        if member == "storages":
            kinds = [i.name for i in scan.imports[before:]]
            element = _ELEMENT_BYTES.get(kinds[-1]) if kinds else None
            if element is None:
                raise _RecordError("a storage record does not name a storage class")
            (numel,) = struct.unpack("<q", _exact(stream, 8))
            _discard(stream, numel * element)
        else:
            (ndim,) = struct.unpack("<i", _exact(stream, 4))
            if not 0 <= ndim <= 64:
                raise _RecordError(f"a tensor record claims {ndim} dimensions")
            _discard(stream, 4 + 16 * ndim + 8)
    if member == "storages":
        _add(scan, stream, member)  # the storage views


def _exact(stream: IO[bytes], n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise _RecordError("the member ends inside a record")
    return data


def _discard(stream: IO[bytes], n: int) -> None:
    if n < 0:
        raise _RecordError("a record has a negative size")
    while n:
        got = len(stream.read(min(n, 1 << 20)))
        if not got:
            raise _RecordError("the member ends inside a storage's bytes")
        n -= got
