"""Pickles are scanned, never unpickled by default: code imports are reported, and nothing in them ever runs."""

from __future__ import annotations

import os
import pickle
import tracemalloc
import warnings
import zipfile

import pytest
import torch

from loraguard.audit.pickle_files import scan_file
from loraguard.core.config import LEGACY_WEIGHTS_NAME
from tests.audit import hostile
from tests.audit.helpers import audit, rules, save_peft


class _Payload:
    """Unpickling this calls os.system, which would create `sentinel`."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {self.sentinel}",)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_code_imports_are_found_in_every_protocol_and_never_run(tmp_path, protocol):
    sentinel = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"w": [1, 2], "x": _Payload(str(sentinel))}, protocol=protocol))
    unsafe = scan_file(str(path)).unsafe
    assert [i.name for i in unsafe] == ["system"] and unsafe[0].module in ("posix", "nt", "os")
    assert rules(audit(path, allow_pickle=True)) == {"LG401"}
    assert not sentinel.exists()


def test_code_in_a_torch_zip_archive_is_found_and_not_loaded(tmp_path):
    sentinel = tmp_path / "ran"
    torch.save({"w": torch.ones(2), "x": _Payload(str(sentinel))}, tmp_path / "model.bin")
    result = audit(tmp_path / "model.bin", allow_pickle=True)
    assert rules(result) == {"LG401"} and "system" in result.findings[0].message
    assert not sentinel.exists()


def test_stack_global_with_computed_operands_counts_as_unsafe(tmp_path):
    # protocol 4: STACK_GLOBAL whose name operand is an empty tuple, not a string:
    # the callable cannot be named statically
    data = b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94)\x93."
    path = tmp_path / "odd.pkl"
    path.write_bytes(data)
    unsafe = scan_file(str(path)).unsafe
    assert len(unsafe) == 1 and unsafe[0].opcode == "STACK_GLOBAL" and unsafe[0].module == "<unresolved>"


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_torch_state_dict_imports_only_tensor_rebuilders(tmp_path, zipped):
    path = tmp_path / "sd.bin"
    state = {"a": torch.randn(2, 3), "b": torch.ones(4, dtype=torch.bfloat16), "c": torch.nn.Parameter(torch.ones(1))}
    torch.save(state, path, _use_new_zipfile_serialization=zipped)
    assert zipfile.is_zipfile(path) == zipped
    scan = scan_file(str(path))
    assert scan.imports and scan.unsafe == []
    assert rules(audit(path)) == {"LG402"}
    assert audit(path, allow_pickle=True).findings == []


def test_legacy_peft_adapter_is_scanned_then_audited_with_allow_pickle(tmp_path):
    model = save_peft("mlp", tmp_path)
    model.save_pretrained(str(tmp_path), safe_serialization=False)
    (tmp_path / "adapter_model.safetensors").unlink()
    assert (tmp_path / LEGACY_WEIGHTS_NAME).exists()
    assert rules(audit(tmp_path)) == {"LG402"}
    assert audit(tmp_path, allow_pickle=True).findings == []
    state = torch.load(tmp_path / LEGACY_WEIGHTS_NAME, weights_only=True)
    key = sorted(k for k in state if ".lora_B." in k)[0]
    state[key] = torch.full_like(state[key], float("inf"))
    torch.save(state, tmp_path / LEGACY_WEIGHTS_NAME)
    result = audit(tmp_path, allow_pickle=True)
    assert [(f.rule, f.key) for f in result.findings] == [("LG306", key)]


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage", b"PK\x03\x04broken zip"])
def test_unparseable_pickle_is_unusable(tmp_path, content):
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    result = audit(path)
    assert rules(result) == {"LG403"} and result.unusable


def test_a_claimed_huge_argument_is_skipped_not_allocated(tmp_path):
    path = tmp_path / "claims.pkl"
    path.write_bytes(b"\x80\x04\x8e" + (1 << 60).to_bytes(8, "little") + b"\0" * 64)  # BINBYTES8 of 2**60 bytes
    tracemalloc.start()
    try:
        scan = scan_file(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [rule for rule, _ in scan.problems] == ["LG403"] and peak < 16 << 20


def test_bytes_after_a_plain_pickle_are_not_run_by_torch_and_not_an_error(tmp_path):
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2) + b"\xff trailing bytes torch never reads")
    assert rules(audit(path)) == {"LG402"}


def test_a_legacy_file_must_hold_its_five_pickles(tmp_path):
    path = tmp_path / "short.pt"
    path.write_bytes(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2))
    assert rules(audit(path)) == {"LG403"}


def test_a_pickle_under_a_name_no_loader_uses_is_found_by_its_content(tmp_path):
    sentinel = tmp_path / "ran"
    (tmp_path / "notes").write_bytes(pickle.dumps(_Payload(str(sentinel)), protocol=0))
    (tmp_path / "README").write_text("N.B. text that starts like a pickle but imports nothing\n")
    hostile_dir = audit(tmp_path)
    assert rules(hostile_dir) == {"LG401"} and [os.path.basename(p) for p, _ in hostile_dir.skipped] == ["README"]
    assert not sentinel.exists()


def test_a_real_legacy_tar_checkpoint_is_walked_record_by_record(tmp_path):
    path = tmp_path / "old.pt"
    path.write_bytes(hostile.legacy_tar_state_dict([1.0, 2.0, 3.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = torch.load(path, weights_only=False)  # written by this test: proves the format is torch's
    assert torch.equal(loaded["w"], torch.tensor([1.0, 2.0, 3.0]))
    scan = scan_file(str(path))
    assert scan.problems == [] and scan.unsafe == [] and scan.pickles == 6
