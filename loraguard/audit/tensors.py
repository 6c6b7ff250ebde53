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

    def peek(self, ref: TensorRef) -> torch.Tensor:
        """The whole tensor in a scratch buffer that the next `peek` overwrites: for a check that is done with it
        before reading another tensor. Reusing one buffer saves allocating (and faulting in) every tensor anew."""
        import torch

        if ref.name in self.in_memory or not ref.shape:
            return self.load(ref)
        dtype = torch_dtype(ref.dtype)
        if dtype is None:
            raise ValueError(f"{ref.file}: key '{ref.name}': torch cannot hold {ref.dtype} values")
        if len(self._scratch) < ref.nbytes:
            self._scratch = bytearray(ref.nbytes)
        view = memoryview(self._scratch)[: ref.nbytes]
        f = self._file(ref.file)
        f.seek(ref.start)
        if f.readinto(view) != ref.nbytes:
            raise OSError(f"{ref.file}: key '{ref.name}': file shrank while reading")
        return torch.frombuffer(view, dtype=dtype).reshape(ref.shape)

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


def value_flags(t: torch.Tensor) -> tuple[bool, bool]:
    """(holds NaN or Inf, is all zero) in one pass: min and max of a float tensor are finite only if all are."""
    import torch

    if t.numel() == 0:
        return False, True
    if t.is_complex():
        t = torch.view_as_real(t)
    if not t.is_floating_point():
        return False, not bool(t.any())
    if t.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = t.float()
    lowest, highest = torch.aminmax(t)
    low, high = lowest.item(), highest.item()
    finite = math.isfinite(low) and math.isfinite(high)
    return not finite, finite and low == 0 and high == 0
