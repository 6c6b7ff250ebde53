"""Scan what `torch.load` would unpickle for the callables it imports, without unpickling anything.

A pickle runs code by importing a callable (GLOBAL, STACK_GLOBAL, INST, EXT*) and calling it (REDUCE, OBJ,
NEWOBJ, INST). A torch save needs only a handful of tensor-rebuilding callables; anything else can run code.
The opcodes are walked by `pickle_ops` here, byte for byte as CPython's unpickler reads them, with every
argument bounded: a huge byte string is skipped, never held in memory. Which pickles are read follows
`torch.load` (torch/serialization.py): see `pickle_files.py`.
"""

from __future__ import annotations

import io
import pickletools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

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
_INT_OPS = {"INT", "LONG", "LONG1", "LONG4", "BININT", "BININT1", "BININT2"}
#: Opcode by its one-byte code (what pickletools keeps, untyped, as `code2op`).
_OPCODES = {op.code: op for op in pickletools.opcodes}
_PUT_OPS = {"PUT", "BINPUT", "LONG_BINPUT"}
_GET_OPS = {"GET", "BINGET", "LONG_BINGET"}
_CALL_OPS = {"REDUCE", "OBJ", "NEWOBJ", "NEWOBJ_EX", "INST"}
_EXT_OPS = {"EXT1", "EXT2", "EXT4"}
_NO_PUSH_OPS = _PUT_OPS | {"MEMOIZE", "PROTO", "FRAME", "STOP"}

#: Longest text line (GLOBAL, INT...) and string argument kept; longer strings are skipped, never held.
_MAX_LINE = 1 << 16
_MAX_KEPT = 1 << 16
_SKIP_CHUNK = 1 << 20
_COUNT_BYTES = {pickletools.TAKEN_FROM_ARGUMENT1: 1, pickletools.TAKEN_FROM_ARGUMENT4: 4}
_COUNT_BYTES.update({pickletools.TAKEN_FROM_ARGUMENT4U: 4, pickletools.TAKEN_FROM_ARGUMENT8U: 8})


class PickleParseError(ValueError):
    """The bytes stop being a pickle here (CPython's unpickler would raise at this opcode too)."""


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


@dataclass
class PickleScan:
    """Imports and call opcodes of the pickles scanned, and problems (rule, message) that stopped a scan."""

    imports: list[PickleImport] = field(default_factory=list)
    calls: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    pickles: int = 0
    #: Why no pickle would run at all (a numeric .npy, a tar without torch's members); "" otherwise.
    nothing_runs: str = ""

    @property
    def unsafe(self) -> list[PickleImport]:
        return [i for i in self.imports if not i.safe]


@dataclass
class OnePickle:
    """What one pickle did: its imports, calls, and its value when it is a lone integer (torch's magic number)."""

    imports: list[PickleImport]
    calls: int
    literal: int | None
    error: str | None = None


def pickle_ops(stream: IO[bytes]) -> Iterator[tuple[str, object]]:
    """(opcode name, argument) of one pickle up to and including STOP; arguments too long to keep are None.

    Raises PickleParseError where the unpickler would fail, EOFError on an empty stream.
    """
    first = True
    while True:
        code = stream.read(1)
        if not code:
            if first:
                raise EOFError("no pickle here (end of data)")
            raise PickleParseError("the data ends before the pickle's STOP opcode")
        first = False
        op = _OPCODES.get(code.decode("latin-1"))
        if op is None:
            raise PickleParseError(f"byte 0x{code[0]:02x} is not a pickle opcode")
        yield op.name, _argument(op.arg, stream)
        if op.name == "STOP":
            return


def _argument(desc: pickletools.ArgumentDescriptor | None, stream: IO[bytes]) -> object:
    if desc is None:
        return None
    try:
        if desc.n >= 0:
            return desc.reader(stream)
        if desc.n == pickletools.UP_TO_NEWLINE:
            lines = 2 if desc.name == "stringnl_noescape_pair" else 1
            raw = b"".join(_line(stream) for _ in range(lines))
            return desc.reader(io.BytesIO(raw))
        width = _COUNT_BYTES[desc.n]
        prefix = stream.read(width)
        if len(prefix) != width:
            raise PickleParseError(f"the data ends inside {desc.name}'s length")
        length = int.from_bytes(prefix, "little", signed=desc.n == pickletools.TAKEN_FROM_ARGUMENT4)
        if length < 0:
            raise PickleParseError(f"{desc.name} has a negative length")
        if length <= _MAX_KEPT:
            body = stream.read(length)
            if len(body) != length:
                raise PickleParseError(f"the data ends inside a {length}-byte {desc.name}")
            return desc.reader(io.BytesIO(prefix + body))
        _skip(stream, length, desc.name)
        return None
    except PickleParseError:
        raise
    except (ValueError, UnicodeDecodeError, OverflowError) as err:
        raise PickleParseError(f"bad {desc.name} argument ({str(err)[:80]})") from None


def _line(stream: IO[bytes]) -> bytes:
    line = stream.readline(_MAX_LINE + 1)
    if not line.endswith(b"\n"):
        raise PickleParseError("a text argument has no newline within 64 KiB")
    return line


def _skip(stream: IO[bytes], length: int, what: str) -> None:
    while length:
        got = len(stream.read(min(length, _SKIP_CHUNK)))
        if not got:
            raise PickleParseError(f"the data ends inside a long {what}")
        length -= got


def scan_pickle(stream: IO[bytes], member: str = "") -> OnePickle:
    """Walk one pickle, resolving STACK_GLOBAL's operands from the strings pushed or memoized before it.

    Imports seen before a parse error are kept: the unpickler would have run them before failing.
    """
    imports: list[PickleImport] = []
    calls, ops, literal = 0, 0, None
    pushed: list[object] = []
    memo: dict[object, object] = {}  # keyed by the PUT's argument, an int in any pickle the unpickler accepts
    try:
        for name, arg in pickle_ops(stream):
            ops += 1
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                imports.append(PickleImport(module, attr, name, member))
            elif name == "STACK_GLOBAL":
                operands = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
                module, attr = "<unresolved>", "<computed at load time>"
                if isinstance(operands[0], str) and isinstance(operands[1], str):
                    module, attr = operands[0], operands[1]
                imports.append(PickleImport(module, attr, name, member))
            elif name in _EXT_OPS:
                imports.append(PickleImport("<copyreg extension>", str(arg), name, member))
            if name in _CALL_OPS:
                calls += 1
            if name in _INT_OPS and ops <= 3:
                literal = arg if isinstance(arg, int) else None
            elif name not in ("PROTO", "FRAME", "STOP"):
                literal = None
            if name in _PUT_OPS:
                memo[arg] = pushed[-1] if pushed else None
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in _GET_OPS:
                pushed.append(memo.get(arg))
            elif name in _STRING_OPS:
                pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else arg)
            elif name not in _NO_PUSH_OPS:
                pushed.append(None)
            del pushed[:-2]
    except PickleParseError as err:
        return OnePickle(imports, calls, None, f"opcode {ops + 1}: {err}")
    return OnePickle(imports, calls, literal)
