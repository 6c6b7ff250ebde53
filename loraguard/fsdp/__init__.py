"""PyTorch FSDP: the LoRA invariants across ranks (FSDP2 ``fully_shard`` or FSDP1 ``use_orig_params``), and a
correct merged export of a sharded model.

Cheap to import: `run_suite` needs only the standard library; `export_merged` and `merged_state_dict` load torch
when first used.
"""

from __future__ import annotations

from typing import Any

from loraguard.fsdp.suite import APIS, invariant_ids, run_suite
from loraguard.run.outcome import Outcome

__all__ = ["APIS", "Outcome", "export_merged", "invariant_ids", "merged_state_dict", "run_suite"]


def __getattr__(name: str) -> Any:
    if name in ("export_merged", "merged_state_dict"):
        from loraguard.harness.fsdp import export

        return getattr(export, name)
    raise AttributeError(f"module 'loraguard.fsdp' has no attribute {name!r}")
