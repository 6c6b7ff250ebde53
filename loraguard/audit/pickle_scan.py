"""Scan pickles for the callables they import, without unpickling: `pickletools.genops` only reads opcodes.

A pickle runs code by importing a callable (GLOBAL, STACK_GLOBAL, INST) and calling it (REDUCE, OBJ, NEWOBJ,
INST). A torch save needs only a handful of tensor-rebuilding callables; anything else can run code on load.
torch's zip format keeps the pickle in ``<archive>/data.pkl``; its legacy format is up to five pickles in a row.
"""

from __future__ import annotations

import pickletools
import re
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

#: What a plain torch.save of a state dict imports; `torch.load(weights_only=True)` accepts these too.
SAFE_GLOBALS = frozenset(
    {
        ("collections", "OrderedDict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch", "Size"),
        ("torch", "Tensor"),
    }
)
_SAFE_TORCH_NAME = re.compile(
    r"^(?:[A-Za-z0-9]*Storage|UntypedStorage|u?int(?:8|16|32|64)|float(?:16|32|64)|bfloat16|bool|"
    r"complex(?:64|128)|float8_e4m3fn|float8_e5m2|half|double|long)$"
)
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_CALL_OPS = {"REDUCE", "OBJ", "NEWOBJ", "NEWOBJ_EX", "INST"}
_NO_PUSH_OPS = _PUT_OPS | {"MEMOIZE", "PROTO", "FRAME", "STOP"}
#: torch's legacy (non-zip) format: magic number, protocol, sys info, the object, storage keys.
_LEGACY_PICKLES = 5
_PROTO = 0x80


class PickleScanError(ValueError):
    """The file is not a pickle or a torch zip archive that can be read opcode by opcode."""


@dataclass(frozen=True)
class PickleImport:
    """One callable a pickle imports: `module.name`, by which opcode, in which archive member."""

    module: str
    name: str
    opcode: str
    member: str = ""

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"

    @property
    def safe(self) -> bool:
        if (self.module, self.name) in SAFE_GLOBALS:
            return True
        return self.module == "torch" and _SAFE_TORCH_NAME.match(self.name) is not None


@dataclass(frozen=True)
class PickleScan:
    """All imports of a file, and how many opcodes call something."""

    imports: tuple[PickleImport, ...]
    calls: int

    @property
    def unsafe(self) -> list[PickleImport]:
        return [i for i in self.imports if not i.safe]


def scan_file(path: str) -> PickleScan:
    """Scan a torch zip archive (every ``*.pkl`` member) or a raw pickle file; raise PickleScanError or OSError."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.namelist() if m.endswith(".pkl")]
                if not members:
                    raise PickleScanError(f"{path}: a zip archive without a .pkl member is not a torch checkpoint")
                scans = []
                for member in members:
                    with archive.open(member) as stream:
                        scans.append(_scan_stream(stream, member, 1))
        except (zipfile.BadZipFile, EOFError) as err:
            raise PickleScanError(f"{path}: damaged zip archive ({err})") from None
    else:
        with open(path, "rb") as f:
            scans = [_scan_stream(f, "", _LEGACY_PICKLES)]
    return PickleScan(tuple(i for s in scans for i in s.imports), sum(s.calls for s in scans))


def _scan_stream(stream: BinaryIO, member: str, max_pickles: int) -> PickleScan:
    imports: list[PickleImport] = []
    calls = 0
    for index in range(max_pickles):
        if index and stream.read(1) != bytes([_PROTO]):
            break  # no further pickle: the rest is raw storage data
        if index:
            stream.seek(-1, 1)
        try:
            found, n = _scan_one(stream, member)
        except (ValueError, EOFError, UnicodeDecodeError, OverflowError) as err:
            where = f" member {member}" if member else ""
            raise PickleScanError(f"pickle{where} #{index + 1} cannot be parsed ({str(err)[:120]})") from None
        imports += found
        calls += n
    return PickleScan(tuple(imports), calls)


def _scan_one(stream: BinaryIO, member: str) -> tuple[list[PickleImport], int]:
    """Walk one pickle's opcodes, resolving STACK_GLOBAL's operands from the strings pushed and memoized before it."""
    imports: list[PickleImport] = []
    calls = 0
    pushed: list[object] = []
    memo: dict[int, object] = {}
    for op, arg, _ in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            imports.append(PickleImport(module, attr, name, member))
        elif name == "STACK_GLOBAL":
            module, attr = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            if not (isinstance(module, str) and isinstance(attr, str)):
                module, attr = "<unresolved>", "<computed at load time>"
            imports.append(PickleImport(module, attr, name, member))
        if name in _CALL_OPS:
            calls += 1
        if name in _PUT_OPS:
            memo[arg] = pushed[-1] if pushed else None
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in _GET_OPS:
            pushed.append(memo.get(arg))
        elif name in _STRING_OPS:
            pushed.append(arg)
        elif name not in _NO_PUSH_OPS:
            pushed.append(None)
        del pushed[:-2]
    return imports, calls
