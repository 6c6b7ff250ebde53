"""An adversarial corpus for `loraguard audit`, generated in code: one case per way a checkpoint directory can attack
the machine that audits or loads it. Every payload only creates its own sentinel file under the corpus folder, so
a test can prove that auditing ran none of them and that loading runs each one (the cases are live).

`build(root)` writes the corpus and returns its cases; benchmarks/audit_tools_bench.py runs other scanners on it.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from loraguard.core.config import CONFIG_NAME, WEIGHTS_NAME

MAGIC = 0x1950A86A20F9469CFC6C
#: What the deflate bomb's data.pkl inflates to (1 GiB, from a file of about 1 MB).
BOMB_BYTES = 1 << 30


@dataclass
class Case:
    """A file or directory to audit, the class of attack it stands for, and what the audit must say."""

    name: str
    klass: str
    path: Path
    rules: set[str]  # the audit must report at least these
    exit_code: int
    #: How the victim loads it ("torch", "pickle"), so a test can prove the payload is live; "" for non-code cases.
    load: str = ""
    target: Path | None = None  # the file the victim loads, when `path` is a directory
    sentinel: Path | None = None
    benign: bool = False
    extra: dict = field(default_factory=dict)


def code(sentinel: Path) -> str:
    """Python that creates `sentinel`: the whole effect of every payload here."""
    return f"open({str(sentinel)!r}, 'a').close()"


def p0(sentinel: Path) -> bytes:
    """Protocol 0: GLOBAL builtins.exec, MARK, UNICODE, TUPLE, REDUCE."""
    return b"cbuiltins\nexec\n(V" + code(sentinel).encode("raw_unicode_escape") + b"\ntR."


def p1(sentinel: Path) -> bytes:
    """Protocol 1 (binary, no PROTO opcode): GLOBAL, MARK, BINUNICODE, TUPLE, REDUCE."""
    text = code(sentinel).encode()
    return b"cbuiltins\nexec\n(X" + struct.pack("<I", len(text)) + text + b"tR."


def p4_stack_global(sentinel: Path) -> bytes:
    """Protocol 4: the callable named by memoized strings fetched back with BINGET before STACK_GLOBAL."""
    text = code(sentinel).encode()
    body = (
        b"\x8c\x08builtins\x94\x8c\x04exec\x94h\x00h\x01\x93" + b"\x8c" + bytes([len(text)]) + text + b"\x85R."
        if len(text) < 256
        else b""
    )
    assert body, "sentinel path too long for SHORT_BINUNICODE"
    return b"\x80\x04" + body


def inst(sentinel: Path) -> bytes:
    """INST imports and calls in one opcode."""
    return b"(V" + code(sentinel).encode("raw_unicode_escape") + b"\nibuiltins\nexec\n."


def obj(sentinel: Path) -> bytes:
    """OBJ calls the class pushed after MARK."""
    return b"(cbuiltins\nexec\nV" + code(sentinel).encode("raw_unicode_escape") + b"\no."


class _Reduce:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return exec, (code(self.sentinel),)


def memo_decoy(sentinel: Path) -> bytes:
    """STACK_GLOBAL whose operands come from the memo, with harmless-looking strings pushed last as decoys."""
    out = b""
    for index, text in enumerate(("builtins", "exec", "torch", "LongStorage")):
        out += b"V" + text.encode() + b"\np" + str(index).encode() + b"\n0"  # UNICODE, PUT, POP
    return out + b"g0\ng1\n\x93(V" + code(sentinel).encode("raw_unicode_escape") + b"\ntR."


def nested_loads(sentinel: Path) -> bytes:
    """pickle.loads of an inner payload carried as bytes: scanners that do not look at the import miss it."""
    inner = p0(sentinel)
    return b"\x80\x04cpickle\nloads\nC" + bytes([len(inner)]) + inner + b"\x85R." if len(inner) < 256 else b""


def npy_objects(sentinel: Path) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.array([_Reduce(sentinel), 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


def npz_objects(sentinel: Path) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, clean=np.ones(3), evil=np.array([_Reduce(sentinel)], dtype=object))
    return buf.getvalue()


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buf.getvalue()


def reduce_in(obj_: object, sentinel: Path) -> dict:
    """A state dict with a payload object beside real tensors."""
    return {"weight": torch.ones(2, 2), "bias": torch.zeros(2), "extra": _Reduce(sentinel), "more": obj_}


def torch_zip(payload_obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(payload_obj, buf)
    return buf.getvalue()


def torch_legacy(obj_: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj_, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def pickle_ends(data: bytes, count: int) -> list[int]:
    """Byte offsets just past each of the first `count` pickles of `data`."""
    stream, ends = io.BytesIO(data), []
    for _ in range(count):
        for _op, _arg, _pos in pickletools.genops(stream):
            pass
        ends.append(stream.tell())
    return ends


def legacy_with(index: int, payload: bytes) -> bytes:
    """A legacy torch file whose pickle #`index` (1-based: 2 protocol, 3 sys info) is replaced by `payload`."""
    data = torch_legacy({"w": torch.ones(2)})
    ends = [0, *pickle_ends(data, 5)]
    return data[: ends[index - 1]] + payload + data[ends[index] :]


def rename_member(data: bytes, old: str, new: str) -> bytes:
    """A copy of zip `data` with member `old` renamed to `new` (same length, so offsets hold)."""
    assert len(old) == len(new)
    return data.replace(old.encode(), new.encode())


def legacy_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


class _Ref:
    """Stands for a tensor the legacy tar's main pickle refers to by persistent id."""

    def __init__(self, key: int):
        self.key = key


class _LegacyPickler(pickle.Pickler):
    def persistent_id(self, obj: object) -> str | None:
        return str(obj.key) if isinstance(obj, _Ref) else None


def legacy_tar_state_dict(values: list[float]) -> bytes:
    """torch's legacy tar format, written as torch < 0.4 did: one float32 storage, one tensor over it, a dict."""
    storage = struct.pack("<q", len(values)) + struct.pack(f"<{len(values)}f", *values)
    storages = pickle.dumps(1, protocol=2) + pickle.dumps((0, "cpu", torch.FloatStorage), protocol=2) + storage
    storages += pickle.dumps([], protocol=2)  # storage views
    shape = struct.pack("<iI", 1, 0) + struct.pack("<q", len(values)) + struct.pack("<q", 1) + struct.pack("<q", 0)
    tensors = pickle.dumps(1, protocol=2) + pickle.dumps((1, 0, None), protocol=2) + shape
    main = io.BytesIO()
    _LegacyPickler(main, protocol=2).dump({"w": _Ref(1)})
    return legacy_tar({"storages": storages, "tensors": tensors, "pickle": main.getvalue()})


def zip_member_flags(data: bytes, member: str, flag: int | None = None, method: int | None = None) -> bytes:
    """Rewrite a zip member's general-purpose flag or compression method, in the local and central headers."""
    out = bytearray(data)
    name = member.encode()
    for sig, flag_at, method_at, name_at in ((b"PK\x03\x04", 6, 8, 30), (b"PK\x01\x02", 8, 10, 46)):
        pos = out.find(sig)
        while pos >= 0:
            if out[pos + name_at : pos + name_at + len(name)] == name:
                if flag is not None:
                    out[pos + flag_at : pos + flag_at + 2] = struct.pack("<H", flag)
                if method is not None:
                    out[pos + method_at : pos + method_at + 2] = struct.pack("<H", method)
            pos = out.find(sig, pos + 1)
    return bytes(out)


def deflate_bomb(inflated: int) -> bytes:
    """A zip whose data.pkl is a pickle of `inflated` zero bytes (a multiple of 1 MiB), deflated about 1000:1.

    After a full flush deflate forgets its history, so every 1 MiB block of zeros compresses to the same bytes:
    the stream is built by repeating one block, without compressing a gibibyte.
    """
    head = b"\x80\x02\x8e" + struct.pack("<Q", inflated)  # BINBYTES8 of `inflated` bytes
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = comp.compress(head) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(1 << 20)) + comp.flush(zlib.Z_FULL_FLUSH)
    deflated = start + block * (inflated >> 20) + comp.compress(b".") + comp.flush()
    return _patch_deflated(deflated, len(head) + inflated + 1)


def _patch_deflated(deflated: bytes, size: int) -> bytes:
    """A one-member zip around an already deflated body (CRC left 0: the scan stops at its cap before any check)."""
    name = b"archive/data.pkl"
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0, 0, len(deflated), size, len(name), 0)
    central = struct.pack(
        "<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, 0, len(deflated), size, len(name), 0, 0, 0, 0, 0, 0
    )
    body = local + name + deflated
    cd = central + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(cd), len(body), 0)
    return body + cd + end


def safetensors_raw(header: dict | str, data: bytes = b"") -> bytes:
    text = header if isinstance(header, str) else json.dumps(header)
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw + data


def clean_adapter(directory: Path, config: dict | None = None, keys: dict | None = None) -> Path:
    """A small valid peft-layout adapter (fc1, r=2) with random non-zero B."""
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    tensors = keys or {
        "base_model.model.fc1.lora_A.weight": torch.randn(2, 8, generator=g),
        "base_model.model.fc1.lora_B.weight": torch.randn(16, 2, generator=g),
    }
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    body = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["fc1"]}
    body.update(config or {})
    (directory / CONFIG_NAME).write_text(json.dumps(body))
    return directory


def build(root: Path) -> list[Case]:
    """Write the whole corpus under `root` (sentinels go to `root/sentinels`) and return its cases."""
    root.mkdir(parents=True, exist_ok=True)
    sentinels = root / "sentinels"
    sentinels.mkdir(exist_ok=True)
    cases: list[Case] = []

    def add(name: str, klass: str, rules: set[str], exit_code: int, make: Callable[[Path, Path], Path], **kw) -> None:
        sentinel = sentinels / name
        path = make(root / name, sentinel)
        cases.append(Case(name, klass, path, rules, exit_code, sentinel=sentinel, **kw))

    def file(name: str, data: bytes) -> Callable[[Path, Path], Path]:
        def make(base: Path, sentinel: Path) -> Path:
            base.mkdir()
            (base / name).write_bytes(data)
            return base / name

        return make

    def payload_file(name: str, builder: Callable[[Path], bytes]) -> Callable[[Path, Path], Path]:
        def make(base: Path, sentinel: Path) -> Path:
            base.mkdir()
            (base / name).write_bytes(builder(sentinel))
            return base / name

        return make

    # -- every file a loader reads: Trainer checkpoints, nested and odd names, an explicit legacy adapter --------
    for fname in ("training_args.bin", "optimizer.pt", "rng_state.pth", "scheduler.pt"):

        def trainer(base: Path, sentinel: Path, fname: str = fname) -> Path:
            clean_adapter(base)
            (base / fname).write_bytes(torch_zip(reduce_in(1, sentinel)))
            return base

        add(
            f"trainer_{fname.replace('.', '_')}",
            "trainer checkpoint file",
            {"LG401"},
            1,
            trainer,
            load="torch",
            target=Path(fname),
        )
    for fname in ("sub/pytorch_model.bin", "model.pickle", "model.joblib", "pytorch_model.BIN", "deep/a/b/c/w.pt"):

        def nested(base: Path, sentinel: Path, fname: str = fname) -> Path:
            (base / fname).parent.mkdir(parents=True, exist_ok=True)
            save_file({"w": torch.ones(2)}, str(base / "model.safetensors"))
            (base / fname).write_bytes(pickle.dumps(reduce_in(2, sentinel), protocol=2))
            return base

        add(
            f"model_dir_{fname.replace('/', '_').replace('.', '_')}",
            "nested or odd-named pickle",
            {"LG401"},
            1,
            nested,
            load="pickle",
            target=Path(fname),
        )

    def explicit_bin(base: Path, sentinel: Path) -> Path:
        clean_adapter(base)
        (base / "adapter_model.bin").write_bytes(torch_zip(reduce_in(3, sentinel)))
        return base / "adapter_model.bin"

    add("explicit_adapter_bin", "adapter_model.bin beside safetensors", {"LG401"}, 1, explicit_bin, load="torch")

    def bin_beside(base: Path, sentinel: Path) -> Path:
        explicit_bin(base, sentinel)
        return base

    add(
        "adapter_bin_beside_safetensors",
        "adapter_model.bin beside safetensors",
        {"LG401"},
        1,
        bin_beside,
        load="torch",
        target=Path("adapter_model.bin"),
    )
    add(
        "unknown_name_protocol0",
        "protocol 0/1 pickle under any name",
        {"LG401"},
        1,
        payload_file("weights.data", p0),
        load="pickle",
    )
    add(
        "unknown_name_protocol1",
        "protocol 0/1 pickle under any name",
        {"LG401"},
        1,
        payload_file("checkpoint", p1),
        load="pickle",
    )

    # -- what torch.load reads, byte for byte ---------------------------------------------------------------------
    for label, builder in (("p0", p0), ("p1", p1), ("p4_memo", p4_stack_global), ("inst", inst), ("obj", obj)):
        add(
            f"opcodes_{label}", "pickle opcode variants", {"LG401"}, 1, payload_file("model.bin", builder), load="torch"
        )
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        add(
            f"reduce_protocol{proto}",
            "pickle opcode variants",
            {"LG401"},
            1,
            payload_file("model.pkl", lambda s, proto=proto: pickle.dumps(reduce_in(0, s), protocol=proto)),
            load="pickle",
        )
    add(
        "torch_zip_payload",
        "torch zip archive",
        {"LG401"},
        1,
        payload_file("pytorch_model.bin", lambda s: torch_zip(reduce_in(0, s))),
        load="torch",
    )
    add(
        "upper_case_member",
        "torch zip archive",
        {"LG401"},
        1,
        payload_file("model.pt", lambda s: rename_member(torch_zip(reduce_in(0, s)), "/data.pkl", "/DATA.PKL")),
        load="torch",
    )
    add(
        "zip_appended_to_pickle",
        "zip appended to a pickle",
        {"LG401"},
        1,
        payload_file("model.pt", lambda s: p0(s) + torch_zip({"w": torch.ones(2)})),
        load="torch",
    )
    add(
        "payload_zip_appended_to_clean_pickle",
        "zip appended to a pickle",
        {"LG401"},
        1,
        payload_file("model.pkl", lambda s: pickle.dumps({"a": 1}, protocol=2) + torch_zip(reduce_in(0, s))),
    )
    add(
        "legacy_sys_info_protocol0",
        "legacy pickle chain",
        {"LG401"},
        1,
        payload_file("model.pt", lambda s: legacy_with(3, p0(s))),
        load="torch",
    )
    add(
        "legacy_protocol_slot_protocol1",
        "legacy pickle chain",
        {"LG401"},
        1,
        payload_file("model.pt", lambda s: legacy_with(2, p1(s))),
        load="torch",
    )
    add(
        "legacy_data_pickle",
        "legacy pickle chain",
        {"LG401"},
        1,
        payload_file("model.pt", lambda s: torch_legacy(reduce_in(0, s))),
        load="torch",
    )
    add(
        "payload_then_garbage",
        "malformed after the payload",
        {"LG401", "LG403"},
        2,
        payload_file("model.pkl", lambda s: p0(s)[:-1] + b"\xff\xfe garbage"),
        load="pickle",
    )
    empty_storages = pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)
    add(
        "legacy_tar_pickle",
        "legacy tar archive",
        {"LG401"},
        1,
        payload_file(
            "model.tar",
            lambda s: legacy_tar({"storages": empty_storages, "tensors": pickle.dumps(0, protocol=2), "pickle": p0(s)}),
        ),
        load="torch",
    )
    add(
        "legacy_tar_storages",
        "legacy tar archive",
        {"LG401", "LG406"},
        2,
        payload_file(
            "model.pt",
            lambda s: legacy_tar(
                {"storages": p1(s), "tensors": pickle.dumps(0, protocol=2), "pickle": pickle.dumps({}, protocol=2)}
            ),
        ),
        load="torch",
    )

    # -- what other scanners' corpora taught: decoys, nesting, numpy object arrays, pickles under other names -----
    add(
        "memo_decoy_stack_global",
        "pickle opcode variants",
        {"LG401"},
        1,
        payload_file("model.pkl", memo_decoy),
        load="pickle",
    )
    add(
        "nested_pickle_loads",
        "pickle opcode variants",
        {"LG401"},
        1,
        payload_file("model.pkl", nested_loads),
        load="pickle",
    )
    add("numpy_object_array", "numpy object arrays", {"LG401"}, 1, payload_file("arr.npy", npy_objects), load="numpy")
    add("npz_object_array", "numpy object arrays", {"LG401"}, 1, payload_file("arrs.npz", npz_objects), load="numpy")
    add(
        "zip_pickle_named_txt",
        "zip appended to a pickle",
        {"LG401"},
        2,
        payload_file("model.bin", lambda s: zip_of({"data.txt": pickle.dumps(_Reduce(s), protocol=4)})),
    )
    add(
        "seven_zip_archive",
        "encrypted or unknown-compression member",
        {"LG406"},
        2,
        file("model.7z", b"7z\xbc\xaf\x27\x1c" + bytes(64)),
    )

    # -- archives that cannot be scanned: a finding, never "no findings" -----------------------------------------
    clean_zip = torch_zip({"w": torch.ones(2)})
    member = next(n for n in zipfile.ZipFile(io.BytesIO(clean_zip)).namelist() if n.endswith("data.pkl"))
    add(
        "zip_encrypted_member",
        "encrypted or unknown-compression member",
        {"LG404"},
        2,
        file("model.bin", zip_member_flags(clean_zip, member, flag=0x1)),
    )
    add(
        "zip_unknown_compression",
        "encrypted or unknown-compression member",
        {"LG404"},
        2,
        file("model.bin", zip_member_flags(clean_zip, member, method=99)),
    )
    add("deflate_bomb", "inflation bomb", {"LG405"}, 2, file("model.bin", deflate_bomb(BOMB_BYTES)))

    # -- bad input: a finding or exit 2 with a message, never a traceback or a hang ------------------------------
    huge = "9" * 5000
    add(
        "safetensors_huge_shape",
        "huge integers",
        {"LG102"},
        2,
        file(
            "model.safetensors",
            safetensors_raw(f'{{"w": {{"dtype": "F32", "shape": [{huge}], "data_offsets": [0, 4]}}}}', b"\0" * 4),
        ),
    )
    add(
        "safetensors_huge_offsets",
        "huge integers",
        {"LG106"},
        2,
        file(
            "model.safetensors",
            safetensors_raw(
                f'{{"w": {{"dtype": "U8", "shape": [{"9" * 4000}], "data_offsets": [0, {"9" * 4000}]}}}}', b"\0" * 4
            ),
        ),
    )
    for field_, value, rule in (("r", huge, "LG003"), ("r", "9" * 4000, "LG206"), ("lora_alpha", "9" * 4000, "LG206")):

        def big_config(base: Path, sentinel: Path, field_: str = field_, value: str = value) -> Path:
            clean_adapter(base)
            body = (base / CONFIG_NAME).read_text()
            (base / CONFIG_NAME).write_text(body.replace(f'"{field_}": ', f'"{field_}": {value}, "_was": '))
            return base

        add(f"config_huge_{field_}_{len(value)}", "huge integers", {rule}, 2 if rule == "LG003" else 1, big_config)
    for label, changes, rule in (
        ("invalid_target_regex", {"target_modules": "fc(1"}, "LG206"),
        ("invalid_rank_pattern", {"rank_pattern": {"fc[": 2}}, "LG206"),
        ("nested_quantifier_regex", {"target_modules": "(a+)+c"}, "LG202"),  # `re` would backtrack for ages
        ("catastrophic_regex", {"target_modules": "(a|aa)+c"}, "LG209"),
        ("catastrophic_rank_pattern_regex", {"rank_pattern": {"(a|aa)+c": 4}}, "LG209"),
    ):
        long_module = "base_model.model." + "a" * 40
        keys = (
            {f"{long_module}.lora_A.weight": torch.ones(2, 8), f"{long_module}.lora_B.weight": torch.ones(16, 2)}
            if label.endswith("_regex") and "invalid" not in label
            else None
        )
        add(
            label,
            "config regexes",
            {rule},
            1,
            lambda base, s, changes=changes, keys=keys: clean_adapter(base, changes, keys),
        )

    # -- names from files, escaped in every output -----------------------------------------------------------------
    def control_key(base: Path, sentinel: Path) -> Path:
        key = "base_model.model.fc1.lora_A.default\x1b[2K\r\x1b]0;owned\x07\x00]]>&<x>.weight"
        return clean_adapter(
            base, keys={key: torch.ones(2, 8), "base_model.model.fc1.lora_B.weight": torch.full((16, 2), float("nan"))}
        )

    add("control_chars_in_key", "names escaped in output", {"LG201", "LG306"}, 1, control_key)

    def secret_link(base: Path, sentinel: Path) -> Path:
        base.mkdir()
        (base / "secret.txt").write_text("TOPSECRET-" + "x" * 40 + "\n")
        (base / "adapter_model.safetensors").symlink_to(base / "secret.txt")
        (base / CONFIG_NAME).write_text(json.dumps({"peft_type": "LORA", "r": 2, "target_modules": ["fc1"]}))
        return base

    add("symlink_to_secret", "names escaped in output", {"LG101"}, 2, secret_link, extra={"secret": "TOPSECRET"})
    return cases


def build_special(root: Path) -> list[Case]:
    """FIFOs, devices and symlinks to them under every name the audit opens (POSIX only)."""
    root.mkdir(parents=True, exist_ok=True)
    cases = []
    names = ("adapter_model.safetensors", CONFIG_NAME, "model.safetensors.index.json", "pytorch_model.bin", "w.pt")
    for kind in ("fifo", "dev_zero"):
        for name in names:
            base = root / f"{kind}_{name.replace('.', '_')}"
            clean_adapter(base) if name not in (WEIGHTS_NAME, CONFIG_NAME) else base.mkdir()
            target = base / name
            if target.exists():
                target.unlink()
            if kind == "fifo":
                os.mkfifo(target)
            else:
                target.symlink_to("/dev/zero")
            cases.append(Case(base.name, "FIFO, device or symlink to one", base, {"LG005"}, 2))
    return cases


def benign(root: Path) -> list[Path]:
    """Plain torch.save files of the kinds a training run writes: none may be flagged as code."""
    root.mkdir(parents=True, exist_ok=True)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    # what torch.optim.AdamW.state_dict() holds, built directly (importing torch.optim costs seconds)
    optimizer = {
        "state": {
            i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(4), "exp_avg_sq": torch.zeros(4)} for i in range(4)
        },
        "param_groups": [
            {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.01, "params": [0, 1, 2, 3]}
        ],
    }
    objects = {
        "state_dict.bin": model.state_dict(),
        "optimizer.pt": optimizer,
        "dtypes.pt": {d: torch.ones(3, dtype=getattr(torch, d)) for d in ("float16", "bfloat16", "int64", "bool")},
        "parameter.pt": {"p": torch.nn.Parameter(torch.ones(2))},
        "nested.pth": {"model": model.state_dict(), "step": 3, "lr": [0.1, 0.01], "name": "run"},
    }
    paths = []
    for name, obj_ in objects.items():
        for legacy in (False, True):
            path = root / (("legacy_" if legacy else "") + name)
            torch.save(obj_, path, _use_new_zipfile_serialization=not legacy)
            paths.append(path)
    return paths
