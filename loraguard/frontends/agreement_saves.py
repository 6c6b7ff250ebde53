"""Saving and loading across the reference and peft: saved key sets, the files' bytes, each loading the other's save."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraguard.core.config import WEIGHTS_NAME
from loraguard.core.keys import strip_prefix
from loraguard.frontends.agreement_rows import AgreementRow, Problem, first_line, short

if TYPE_CHECKING:
    import torch
    from torch import nn

    from loraguard.backends.base import Backend


def compare_saves(
    row: AgreementRow,
    peft: Backend,
    base: nn.Module,
    inputs: tuple,
    dtype: torch.dtype,
    ref: Any,
    theirs: Any,
    want: torch.Tensor,
    their_out: torch.Tensor,
    tmp: Path,
    cause_if: Callable[[list[str]], str | None],
) -> None:
    """Saved key sets equal both ways; each implementation loads the other's save and gives identical outputs."""
    import torch
    from safetensors.torch import load_file

    from loraguard.core.tolerance import max_diff
    from loraguard.harness.zoo import run
    from loraguard.reference import LoraModel

    ours_dir, theirs_dir = tmp / "reference", tmp / "peft"
    ref.save_pretrained(ours_dir)
    peft.save(theirs, theirs_dir)
    ours_saved, their_saved = load_file(ours_dir / WEIGHTS_NAME), load_file(theirs_dir / WEIGHTS_NAME)
    ours_keys, their_keys = set(ours_saved), set(their_saved)
    row.keys_equal = ours_keys == their_keys
    key_cause = None
    if not row.keys_equal:
        diff = sorted(ours_keys ^ their_keys)
        key_cause = cause_if([strip_prefix(k) for k in diff])
        row.problems.append(
            Problem(
                f"saved keys differ: only reference {short(sorted(ours_keys - their_keys))}, "
                f"only peft {short(sorted(their_keys - ours_keys))}",
                key_cause,
            )
        )
        row.weights_file = "keys differ"
    else:
        row.weights_file = _compare_files(ours_dir / WEIGHTS_NAME, theirs_dir / WEIGHTS_NAME, ours_saved, their_saved)
        if row.weights_file == DIFFERENT_VALUES:
            row.problems.append(Problem("saved tensors differ in value although both models hold the same weights"))

    def load(what: str, build: Callable[[], nn.Module], expected: torch.Tensor) -> bool:
        try:
            got = run(build().eval(), inputs, dtype)
        except Exception as err:  # any failure to load is a finding, reported with its message
            message = first_line(err).replace(str(tmp), "<save dir>")
            row.problems.append(Problem(f"{what} fails: {type(err).__name__}: {message}", key_cause))
            return False
        if not torch.equal(got, expected):
            row.problems.append(Problem(f"{what}: output differs by {max_diff(got, expected):.3g} from the saver's"))
            return False
        return True

    row.peft_loads_reference = load(
        "peft loading the reference save", lambda: peft.load(copy.deepcopy(base), ours_dir), their_out
    )
    row.reference_loads_peft = load(
        "reference loading the peft save", lambda: LoraModel.from_pretrained(copy.deepcopy(base), theirs_dir), want
    )


IDENTICAL = "identical bytes"
UPCAST = "peft stores float32"
DIFFERENT_VALUES = "values DIFFER"


def _compare_files(
    ours: Path, theirs: Path, ours_saved: dict[str, torch.Tensor], their_saved: dict[str, torch.Tensor]
) -> str:
    """Byte-identical files, or the same values where peft keeps half-precision factors in float32
    (its `autocast_adapter_dtype=True` default), or different values."""
    import torch

    if ours.read_bytes() == theirs.read_bytes():
        return IDENTICAL
    same_values = all(torch.equal(ours_saved[k].float(), their_saved[k].float()) for k in ours_saved)
    upcast_only = all(
        a.dtype == b.dtype or b.dtype == torch.float32 for a, b in ((ours_saved[k], their_saved[k]) for k in ours_saved)
    )
    return UPCAST if same_values and upcast_only else DIFFERENT_VALUES
