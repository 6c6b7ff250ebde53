"""DeepSpeed ZeRO-3: the LoRA invariants across ranks, a rank launcher, and a correct merged export.

Cheap to import: `run_suite` and `Result` need only the standard library; `export_merged` and
`merged_state_dict` load torch when first used.
"""

from __future__ import annotations

from typing import Any

from loraguard.run.outcome import Outcome
from loraguard.zero3.suite import invariant_ids, run_suite

#: What `run_suite` returns for each invariant (the name it has always had).
Result = Outcome

__all__ = ["Outcome", "Result", "export_merged", "invariant_ids", "merged_state_dict", "run_suite"]


def __getattr__(name: str) -> Any:
    if name in ("export_merged", "merged_state_dict"):
        from loraguard.zero3 import export

        return getattr(export, name)
    raise AttributeError(f"module 'loraguard.zero3' has no attribute {name!r}")
