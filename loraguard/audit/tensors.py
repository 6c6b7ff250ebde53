"""Tensor values for the audit: read by byte offset from validated safetensors headers, or from a trusted pickle.

torch is only a tensor library here. Reads are bounded by the byte spans the header parser checked against
the file, so a tensor never costs more memory than the file holds.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loraguard.audit.safe_io import open_regular
from loraguard.audit.safetensors_header import DTYPES, Header, TensorRef

if TYPE_CHECKING:
    import numpy as np
    import torch

#: Rows (or bytes) are streamed in blocks of about this size, so big tensors never sit in memory whole.
BLOCK_BYTES = 1 << 20


def torch_dtype(name: str) -> torch.dtype | None:
    """The torch dtype for a safetensors dtype name, or None where torch has none (F4, F6)."""
    import torch

    attr = DTYPES[name][1]
    return getattr(torch, attr, None) if attr else None


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (for tensors that came from a pickle)."""
    import torch

    for name, (_, attr) in DTYPES.items():
        if attr and getattr(torch, attr, None) == dtype:
            return name
    raise ValueError(f"torch dtype {dtype} has no safetensors equivalent")


@dataclass
class TensorSource:
    """Named tensors of one checkpoint (maybe spread over shard files), read on demand; use as a context manager."""

    refs: dict[str, TensorRef]
    in_memory: dict[str, torch.Tensor] = field(default_factory=dict)
    _handles: dict[str, io.BufferedReader] = field(default_factory=dict)
    _scratch: bytearray = field(default_factory=bytearray)

    @classmethod
    def from_headers(cls, headers: Iterable[Header]) -> TensorSource:
        return cls({name: ref for h in headers for name, ref in h.tensors.items()})

    @classmethod
    def from_state_dict(cls, path: str, tensors: dict[str, torch.Tensor]) -> TensorSource:
        """Tensors already loaded (a trusted pickle), described with the same TensorRef as file-backed ones."""
        refs = {
            k: TensorRef(path, k, dtype_name(t.dtype), tuple(t.shape), -1, t.numel() * t.element_size())
            for k, t in tensors.items()
        }
        return cls(refs, dict(tensors))

    def __enter__(self) -> TensorSource:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def _file(self, path: str) -> io.BufferedReader:
        if path not in self._handles:
            self._handles[path] = open_regular(path)[0]  # read-only and non-blocking; never writes or locks
        return self._handles[path]

    def read_bytes(self, ref: TensorRef, offset: int, length: int) -> bytearray:
        """`length` bytes of `ref`'s data from `offset` (both inside the checked span)."""
        if offset < 0 or offset + length > ref.nbytes:
            raise ValueError(f"{ref.file}: key '{ref.name}': read {offset}+{length} outside its {ref.nbytes} bytes")
        f = self._file(ref.file)
        f.seek(ref.start + offset)
        buf = bytearray(length)
        got = f.readinto(buf)
        if got != length:
            raise OSError(f"{ref.file}: key '{ref.name}': file shrank while reading ({got} of {length} bytes)")
        return buf

    def value_flags(self, ref: TensorRef) -> tuple[bool, bool]:
        """(holds NaN or Inf, is all zero) for `ref`'s values, read off their bits (`bit_flags`): auditing a
        safetensors file never imports torch."""
        if ref.name in self.in_memory:  # a trusted pickle's tensor: the same bits, read from memory
            import torch

            flat = self.in_memory[ref.name].detach().cpu().contiguous().reshape(-1)
            return bit_flags(flat.view(torch.uint8).numpy().data, ref.dtype)
        if len(self._scratch) < ref.nbytes:
            self._scratch = bytearray(ref.nbytes)  # one buffer reused: no allocating (and faulting in) per tensor
        view = memoryview(self._scratch)[: ref.nbytes]
        f = self._file(ref.file)
        f.seek(ref.start)
        if f.readinto(view) != ref.nbytes:
            raise OSError(f"{ref.file}: key '{ref.name}': file shrank while reading")
        return bit_flags(view, ref.dtype)

    def load(self, ref: TensorRef) -> torch.Tensor:
        """The whole tensor; ValueError for dtypes torch cannot hold (F4, F6)."""
        if ref.name in self.in_memory:
            return self.in_memory[ref.name]
        return self.load_rows(ref, 0, ref.shape[0] if ref.shape else 1)

    def load_rows(self, ref: TensorRef, start: int, stop: int) -> torch.Tensor:
        """Rows `start:stop` along the first dimension, read by offset (a 0-d tensor is one row)."""
        import torch

        if ref.name in self.in_memory:
            return self.in_memory[ref.name][start:stop]
        dtype = torch_dtype(ref.dtype)
        if dtype is None:
            raise ValueError(f"{ref.file}: key '{ref.name}': torch cannot hold {ref.dtype} values")
        row_shape = ref.shape[1:]
        row_bytes = math.prod(row_shape) * DTYPES[ref.dtype][0] // 8
        if stop <= start or row_bytes == 0:
            return torch.empty((max(stop - start, 0), *row_shape), dtype=dtype)
        buf = self.read_bytes(ref, start * row_bytes, (stop - start) * row_bytes)
        flat = torch.frombuffer(buf, dtype=dtype)
        return flat.reshape(ref.shape) if not ref.shape else flat.reshape(stop - start, *row_shape)

    def row_blocks(self, ref: TensorRef) -> Iterable[tuple[int, int]]:
        """(start, stop) row ranges of about BLOCK_BYTES each, covering the tensor."""
        rows = ref.shape[0] if ref.shape else 1
        per_row = max(ref.nbytes // max(rows, 1), 1)
        step = max(BLOCK_BYTES // per_row, 1)
        return [(i, min(i + step, rows)) for i in range(0, rows, step)]


#: Float formats by safetensors name: (bytes per value, exponent mask, magnitude mask), little-endian. A value's
#: magnitude bits (all but the sign) reach the exponent mask exactly when its exponent bits are all ones (NaN or
#: Inf), and are zero exactly for a zero of either sign; complex64 is two float32s. float8_e4m3fn has no infinity
#: (only S.1111.111 is NaN) and float8_e8m0fnu no sign and no zero (0xFF is NaN).
_FLOAT_BITS = {
    "F64": (8, 0x7FF0_0000_0000_0000, 0x7FFF_FFFF_FFFF_FFFF),
    "F32": (4, 0x7F80_0000, 0x7FFF_FFFF),
    "C64": (4, 0x7F80_0000, 0x7FFF_FFFF),
    "F16": (2, 0x7C00, 0x7FFF),
    "BF16": (2, 0x7F80, 0x7FFF),
    "F8_E5M2": (1, 0x7C, 0x7F),
    "F8_E4M3": (1, 0x7F, 0x7F),
}


def bit_checkable(dtype: str) -> bool:
    """Whether `bit_flags` judges values of this safetensors dtype (every whole-byte one: not F4 or F6)."""
    return DTYPES[dtype][0] % 8 == 0


def bit_flags(data: memoryview | bytes, dtype: str) -> tuple[bool, bool]:
    """(holds NaN or Inf, is all zero) for raw little-endian values of safetensors `dtype`, from their bits alone:
    exactly what torch's comparison of the values says, without importing torch (about 2 s per audit command).
    The largest magnitude decides both."""
    import numpy as np

    if not len(data):
        return False, True
    if dtype in _FLOAT_BITS:
        width, exponent, magnitude = _FLOAT_BITS[dtype]
        largest = _largest(np.frombuffer(data, dtype=f"<u{width}"), magnitude)
        return largest >= exponent, largest == 0
    octets = np.frombuffer(data, dtype=np.uint8)
    if dtype == "F8_E8M0":
        return int(octets.max()) == 0xFF, False
    return False, int(octets.max()) == 0  # integers and bool: zero bytes are zero


#: Values masked per block: a block stays in the CPU's cache between masking and taking its maximum (5-8x faster
#: than masking a 64 MiB tensor whole, and no copy of it).
_BLOCK_VALUES = 1 << 18


def _largest(bits: np.ndarray, mask: int) -> int:
    """max(bits & mask), block by block."""
    import numpy as np

    block = np.empty(min(_BLOCK_VALUES, bits.size), dtype=bits.dtype)
    largest = 0
    for start in range(0, bits.size, _BLOCK_VALUES):
        part = block[: min(_BLOCK_VALUES, bits.size - start)]
        np.bitwise_and(bits[start : start + _BLOCK_VALUES], mask, out=part)
        largest = max(largest, int(part.max()))
    return largest
