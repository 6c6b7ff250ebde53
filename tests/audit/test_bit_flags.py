"""The audit reads NaN/Inf and all-zero off the values' bits (no torch): for every whole-byte safetensors dtype torch
can hold, exactly what torch's comparison of the same values says, on random bytes and on the patterns that matter
(NaN, both infinities, both zeros, the smallest subnormals)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from loraguard.audit.safetensors_header import DTYPES
from loraguard.audit.tensors import _BLOCK_VALUES, bit_checkable, bit_flags, torch_dtype, value_flags

CHECKED = [name for name in DTYPES if bit_checkable(name) and torch_dtype(name) is not None]


def _torch_flags(data: bytes, name: str) -> tuple[bool, bool]:
    dtype = torch_dtype(name)
    assert dtype is not None
    return value_flags(torch.frombuffer(bytearray(data), dtype=dtype))


@pytest.mark.parametrize("name", CHECKED)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.binary(min_size=1, max_size=48), zeros=st.integers(0, 2))
@example(data=b"\x00", zeros=0).via("all zero")
@example(data=b"\x80", zeros=1).via("negative zero at the top byte")
@example(data=b"\xff", zeros=0).via("all ones: NaN where the format has one")
@example(data=b"\x01", zeros=0).via("the smallest value above zero")
def test_bit_flags_agree_with_torch(name: str, data: bytes, zeros: int) -> None:
    width = DTYPES[name][0] // 8
    if zeros:  # mostly zero bytes, so all-zero and signed-zero cases are met often
        data = bytes(len(data)) if zeros == 2 else data[:1] + bytes(len(data))
    data = (data * width)[: max(width, len(data) // width * width)]
    assert bit_flags(data, name) == _torch_flags(data, name), (name, data.hex())


@pytest.mark.parametrize(
    ("name", "value", "flags"),
    [
        ("F32", float("inf"), (True, False)),
        ("F32", float("-inf"), (True, False)),
        ("F32", float("nan"), (True, False)),
        ("F32", -0.0, (False, True)),
        ("BF16", float("-inf"), (True, False)),
        ("BF16", 1e-40, (False, False)),
        ("F16", float("nan"), (True, False)),
        ("F16", 6e-8, (False, False)),
        ("F64", -0.0, (False, True)),
    ],
)
def test_named_values(name: str, value: float, flags: tuple[bool, bool]) -> None:
    dtype = torch_dtype(name)
    assert dtype is not None
    data = _raw(torch.tensor([value, 0.0], dtype=dtype))
    assert bit_flags(data, name) == flags == _torch_flags(data, name)


@pytest.mark.parametrize("name", ["BF16", "F32"])
def test_every_block_counts(name: str) -> None:
    """Values are masked block by block (`_BLOCK_VALUES` at a time): the first block and the last, partial one too."""
    dtype = torch_dtype(name)
    assert dtype is not None
    values = torch.zeros(_BLOCK_VALUES * 2 + 5, dtype=dtype)
    assert bit_flags(_raw(values), name) == (False, True)
    values[-1] = -0.0
    assert bit_flags(_raw(values), name) == (False, True)
    values[-1] = 1e-3  # in the last block only
    assert bit_flags(_raw(values), name) == (False, False)
    values[-1], values[0] = 0.0, float("nan")  # in the first block only
    assert bit_flags(_raw(values), name) == (True, False) == _torch_flags(_raw(values), name)


def _raw(values: torch.Tensor) -> bytes:
    return values.view(torch.uint8).numpy().tobytes()
