"""The header parser agrees with safetensors on valid files.

It names the rule on broken ones and never raises otherwise.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from loraguard.audit.safetensors_header import MAX_HEADER_BYTES, HeaderError, parse_header, read_header
from loraguard.audit.tensors import TensorSource
from tests.audit.helpers import audit

TENSORS = {
    "w": torch.arange(12, dtype=torch.float32).reshape(3, 4),
    "h": torch.tensor([[1.5, -2.0]], dtype=torch.float16),
    "b": torch.tensor([0.25, 3.0, -1.0], dtype=torch.bfloat16),
    "i": torch.tensor([7, -9], dtype=torch.int64),
    "scalar": torch.tensor(2.5, dtype=torch.float64),
    "empty": torch.zeros(0, 3),
    "flag": torch.tensor([True, False]),
}


def _valid_bytes() -> bytes:
    with tempfile.TemporaryDirectory() as d:
        save_file(TENSORS, f"{d}/v.safetensors", metadata={"format": "pt"})
        return Path(d, "v.safetensors").read_bytes()


VALID = _valid_bytes()


def _parse(data: bytes):
    return parse_header(io.BytesIO(data), len(data), "mem.safetensors")


def _file(header: dict | bytes, data: bytes, length: int | None = None) -> bytes:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def test_parser_agrees_with_safetensors_and_reads_exact_values(tmp_path):
    path = tmp_path / "v.safetensors"
    path.write_bytes(VALID)
    header = read_header(str(path))
    assert header.metadata == {"format": "pt"}
    with safe_open(str(path), "pt") as f:
        assert set(header.tensors) == set(f.keys())
        for name, ref in header.tensors.items():
            assert list(ref.shape) == f.get_slice(name).get_shape() and ref.dtype == f.get_slice(name).get_dtype()
    with TensorSource.from_headers([header]) as source:
        for name, want in load_file(str(path)).items():
            assert torch.equal(source.load(header.tensors[name]), want), name


two = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
EIGHT = bytes(8)
BROKEN = {
    "shorter than the length field": (b"\x01\x00", "LG101"),
    "length beyond the file": (_file({"a": two}, EIGHT, length=500), "LG101"),
    "length beyond the cap": (_file({"a": two}, EIGHT, length=MAX_HEADER_BYTES + 1), "LG101"),
    "not JSON": (_file(b"{nope", EIGHT), "LG102"),
    "JSON array": (_file(b"[1, 2]", EIGHT), "LG102"),
    "invalid UTF-8 name": (
        _file(b'{"\xff\xfe": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}', EIGHT),
        "LG102",
    ),
    "duplicate name": (
        _file(b'{"a": %s, "a": %s}' % (json.dumps(two).encode(), json.dumps(two).encode()), EIGHT),
        "LG102",
    ),
    "deeply nested": (_file(b"[" * 100_000 + b"]" * 100_000, b""), "LG102"),
    "entry missing offsets": (_file({"a": {"dtype": "F32", "shape": [2]}}, EIGHT), "LG102"),
    "negative dim": (_file({"a": {**two, "shape": [-2]}}, EIGHT), "LG102"),
    "boolean dim": (_file({"a": {**two, "shape": [True, 2]}}, EIGHT), "LG102"),
    "offsets reversed": (_file({"a": {**two, "data_offsets": [8, 0]}}, EIGHT), "LG102"),
    "metadata not strings": (_file({"__metadata__": {"k": 1}, "a": two}, EIGHT), "LG102"),
    "unknown dtype": (_file({"a": {**two, "dtype": "F128"}}, EIGHT), "LG103"),
    "overlap": (_file({"a": two, "b": {**two, "data_offsets": [4, 12]}}, bytes(12)), "LG104"),
    "gap between": (_file({"a": two, "b": {**two, "data_offsets": [12, 20]}}, bytes(20)), "LG105"),
    "trailing bytes": (_file({"a": two}, bytes(12)), "LG105"),
    "past the end": (_file({"a": two, "b": {**two, "data_offsets": [8, 16]}}, bytes(12)), "LG106"),
    "shape bigger than span": (_file({"a": {**two, "shape": [3]}}, EIGHT), "LG107"),
    "enormous claimed shape": (_file({"a": {**two, "shape": [2**62, 2**62, 2**62]}}, EIGHT), "LG107"),
    "odd count of 4-bit values": (
        _file({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, bytes(1)),
        "LG107",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_header_names_its_rule(case):
    data, rule = BROKEN[case]
    with pytest.raises(HeaderError) as err:
        _parse(data)
    assert err.value.rule == rule
    assert "mem.safetensors" in str(err.value)


def _audit_bytes(data: bytes):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d, "fuzz.safetensors")
        path.write_bytes(data)
        return audit(path), path


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(data):
    result, _ = _audit_bytes(data)
    assert all(f.rule.startswith("LG1") for f in result.findings)
    assert result.unusable or _parse(data) is not None


@FUZZ
@given(st.binary(min_size=0, max_size=300).map(lambda b: b"{" + b))
def test_arbitrary_headers_never_raise(text):
    result, _ = _audit_bytes(struct.pack("<Q", len(text)) + text + bytes(64))
    assert all(f.rule.startswith("LG1") for f in result.findings)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "truncate"]), st.integers(0, len(VALID) - 1), st.integers(0, 255)
    ),
    min_size=1,
    max_size=4,
)


def _mutate(data: bytes, edits) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        pos = pos % max(len(buf), 1)
        if kind == "flip" and buf:
            buf[pos] ^= value or 1
        elif kind == "insert":
            buf[pos:pos] = bytes([value])
        elif kind == "delete" and buf:
            del buf[pos]
        elif kind == "truncate":
            del buf[pos:]
    return bytes(buf)


@FUZZ
@given(MUTATIONS)
def test_mutated_valid_files_never_raise_and_accepted_ones_load(edits):
    """Any mutation is either a named finding or a file safetensors itself loads to the same names and shapes."""
    data = _mutate(VALID, edits)
    result, path = _audit_bytes(data)
    if result.unusable:
        return
    header = _parse(data)
    with tempfile.TemporaryDirectory() as d:
        Path(d, "m.safetensors").write_bytes(data)
        loaded = load_file(str(Path(d, "m.safetensors")))
    assert {k: tuple(v.shape) for k, v in loaded.items()} == {k: r.shape for k, r in header.tensors.items()}
