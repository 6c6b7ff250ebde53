"""A safetensors header parser that trusts nothing: size caps, strict types, and offsets checked against the file.

Layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON (``{name: {dtype, shape, data_offsets},
"__metadata__": {str: str}}``), then the data section; offsets are relative to the data section, and the
tensors must tile it exactly. Nothing is allocated from a claimed shape: only after shape x dtype size is
checked against a byte span that lies inside the file does anyone read a tensor.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import IO

from loraguard.audit.safe_io import open_regular

#: safetensors' own cap on the header (MAX_HEADER_SIZE in the Rust crate).
MAX_HEADER_BYTES = 100_000_000

#: safetensors dtype -> (bits per element, torch dtype attribute or "" where torch has none).
DTYPES: dict[str, tuple[int, str]] = {
    "BOOL": (8, "bool"),
    "U8": (8, "uint8"),
    "I8": (8, "int8"),
    "F8_E5M2": (8, "float8_e5m2"),
    "F8_E4M3": (8, "float8_e4m3fn"),
    "F8_E8M0": (8, "float8_e8m0fnu"),
    "I16": (16, "int16"),
    "U16": (16, "uint16"),
    "F16": (16, "float16"),
    "BF16": (16, "bfloat16"),
    "I32": (32, "int32"),
    "U32": (32, "uint32"),
    "F32": (32, "float32"),
    "F64": (64, "float64"),
    "I64": (64, "int64"),
    "U64": (64, "uint64"),
    "C64": (64, "complex64"),
    "F4": (4, ""),
    "F6_E2M3": (6, ""),
    "F6_E3M2": (6, ""),
}


class HeaderError(ValueError):
    """A structurally invalid safetensors file; `rule` is the audit rule it breaks."""

    def __init__(self, rule: str, message: str):
        super().__init__(message)
        self.rule = rule


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes lie: `start` is an absolute file offset, checked to lie inside the file."""

    file: str
    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A validated header: tensors in file order and the free-form metadata."""

    file: str
    tensors: dict[str, TensorRef]
    metadata: dict[str, str]


def read_header(path: str) -> Header:
    """Parse and validate `path`'s header; raise HeaderError (with a rule ID), Unusable or OSError, nothing else."""
    f, size = open_regular(path)
    with f:
        return parse_header(f, size, path)


def parse_header(f: IO[bytes], size: int, path: str) -> Header:
    """Validate the header of an open file of `size` bytes."""
    if size < 8:
        raise HeaderError(
            "LG101", f"{path}: {size} bytes, too short for the 8-byte header length; the file is truncated"
        )
    (length,) = struct.unpack("<Q", f.read(8))
    if length > MAX_HEADER_BYTES:  # the number is not quoted: these 8 bytes may be any file's content
        raise HeaderError(
            "LG101", f"{path}: the header length exceeds the 100 MB header cap; the file is not safetensors"
        )
    if length > size - 8:
        raise HeaderError(
            "LG101",
            f"{path}: header length {length} runs past the file ({size} bytes); the file is truncated or not "
            "safetensors",
        )
    raw = f.read(length)
    entries, metadata = _decode(raw, path)
    data_start, data_size = 8 + length, size - 8 - length
    refs = {name: _entry(name, value, path, data_start) for name, value in entries.items()}
    _check_tiling(list(refs.values()), data_start, data_size, path)
    return Header(path, refs, metadata)


def _decode(raw: bytes, path: str) -> tuple[dict, dict[str, str]]:
    try:
        text = raw.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as err:
        raise HeaderError(
            "LG102", f"{path}: header is not UTF-8 (byte {err.start}); tensor names must be UTF-8"
        ) from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise HeaderError("LG102", f"{path}: header is not valid JSON ({str(err)[:120]})") from None
    except _DuplicateKey as err:
        raise HeaderError("LG102", f"{path}: header names tensor {err.args[0]!r} twice") from None
    except ValueError as err:  # an integer past Python's int-to-str digit limit (thousands of digits)
        raise HeaderError("LG102", f"{path}: header holds a number that cannot be read ({str(err)[:100]})") from None
    if not isinstance(obj, dict):
        raise HeaderError("LG102", f"{path}: header is JSON {type(obj).__name__}, not an object")
    metadata = obj.pop("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise HeaderError("LG102", f"{path}: '__metadata__' must map strings to strings")
    return obj, metadata


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _entry(name: str, value: object, path: str, data_start: int) -> TensorRef:
    if not isinstance(value, dict) or not {"dtype", "shape", "data_offsets"} <= value.keys():
        raise HeaderError("LG102", f"{path}: key '{name}': entry must be an object with dtype, shape and data_offsets")
    dtype, shape, offsets = value["dtype"], value["shape"], value["data_offsets"]
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise HeaderError(
            "LG102", f"{path}: key '{name}': shape must be a list of non-negative integers, got {shape!r}"[:300]
        )
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_count(o) for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise HeaderError(
            "LG102",
            f"{path}: key '{name}': data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r}"[:300],
        )
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise HeaderError(
            "LG103", f"{path}: key '{name}': unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}"[:300]
        )
    span = offsets[1] - offsets[0]
    bits = _bits(shape, DTYPES[dtype][0], span * 8)
    if bits != span * 8:
        need = "more than that" if bits is None else f"{bits / 8:g} bytes"
        raise HeaderError(
            "LG107",
            f"{path}: key '{name}': its data_offsets span {span} bytes but shape {shape} of {dtype} needs {need}"[:300],
        )
    return TensorRef(path, name, dtype, tuple(shape), data_start + offsets[0], span)


def _bits(shape: list[int], bits_per_element: int, limit: int) -> int | None:
    """Size of `shape` in bits, or None once it exceeds `limit` (so a claimed shape never costs big arithmetic)."""
    if 0 in shape:
        return 0
    total = bits_per_element
    for dim in shape:
        total *= dim
        if total > limit:
            return None
    return total


def _check_tiling(refs: list[TensorRef], data_start: int, data_size: int, path: str) -> None:
    """The tensors' byte ranges must cover the data section exactly: no overlap, no gap, nothing past the end."""
    end_of_file = data_start + data_size
    position, previous = data_start, None
    for ref in sorted(refs, key=lambda r: (r.start, r.nbytes)):
        if ref.start + ref.nbytes > end_of_file:
            raise HeaderError(
                "LG106",
                f"{path}: key '{ref.name}': bytes {ref.start - data_start}..{ref.start - data_start + ref.nbytes} "
                f"of the data section run past its end ({data_size} bytes); the file is truncated",
            )
        if ref.start < position:
            raise HeaderError("LG104", f"{path}: key '{ref.name}' overlaps key '{previous}' in the data section")
        if ref.start > position:
            raise HeaderError(
                "LG105", f"{path}: {ref.start - position} bytes before key '{ref.name}' belong to no tensor"
            )
        position, previous = ref.start + ref.nbytes, ref.name
    if position != end_of_file:
        raise HeaderError("LG105", f"{path}: {end_of_file - position} bytes after the last tensor belong to no tensor")
