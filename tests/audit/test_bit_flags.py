"""The audit reads NaN/Inf and all-zero off the values' bits (no torch): for every whole-byte safetensors dtype torch
can hold, exactly what torch's comparison of the same values says, on random bytes and on the patterns that matter
(NaN, both infinities, both zeros, the smallest subnormals)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from loraguard.audit.safetensors_header import DTYPES
from loraguard.audit.tensors import _BLOCK_VALUES, TensorSource, bit_checkable, bit_flags, dtype_name, torch_dtype

CHECKED = [name for name in DTYPES if bit_checkable(name) and torch_dtype(name) is not None]


def _torch_flags(data: bytes, name: str) -> tuple[bool, bool]:
    """The oracle, by arithmetic on the values: the smallest and largest are finite only if all are; zero if both
    are zero (a complex number as its two parts; float8 and other narrow floats widened to float32)."""
    dtype = torch_dtype(name)
    assert dtype is not None
    t = torch.frombuffer(bytearray(data), dtype=dtype)
    if t.is_complex():
        t = torch.view_as_real(t)
    if not t.is_floating_point():
        return False, not bool(t.any())
    low, high = (v.item() for v in torch.aminmax(t.float() if t.element_size() == 1 else t))
    finite = math.isfinite(low) and math.isfinite(high)
    return not finite, finite and low == 0 and high == 0


@pytest.mark.parametrize("name", CHECKED)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.binary(min_size=1, max_size=48), zeros=st.integers(0, 2))
@example(data=b"\x00", zeros=0).via("all zero")
@example(data=b"\x80", zeros=1).via("one byte with its top bit set among zero bytes")
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.complex64, torch.int64])
def test_a_trusted_pickle_s_tensors_are_judged_by_the_same_bits(dtype: torch.dtype) -> None:
    """Tensors already in memory (a trusted pickle) go through `bit_flags` too, whatever their shape or strides."""
    values = torch.zeros(3, 4, dtype=dtype).t()  # not contiguous
    source = TensorSource.from_state_dict("model.bin", {"w": values, "scalar": torch.zeros((), dtype=dtype)})
    assert source.value_flags(source.refs["w"]) == (False, True) == source.value_flags(source.refs["scalar"])
    values[2, 1] = 1
    assert source.value_flags(source.refs["w"]) == (False, False)
    if dtype.is_floating_point:
        values[0, 0] = float("inf")
        assert source.value_flags(source.refs["w"]) == (True, False)
    assert dtype_name(dtype) == source.refs["w"].dtype
