"""Task types: the heads peft adds to `modules_to_save` on its own when a model is wrapped for a task.

`PeftModelForSequenceClassification` and `...ForTokenClassification` add ``classifier`` and ``score`` (and
``...ForQuestionAnswering`` ``qa_outputs``) to every adapter's modules_to_save, so each adapter trains and saves its
own copy of the head. Causal and seq2seq LMs add none: users list ``lm_head`` themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from loraguard.core.config import TASK_TYPES, LoraConfig

__all__ = ["TASK_HEADS", "TASK_TYPES", "task_heads", "with_task_heads"]
from loraguard.core.matching import entry_matches

#: The heads each task type adds to modules_to_save.
TASK_HEADS: dict[str, tuple[str, ...]] = {
    "SEQ_CLS": ("classifier", "score"),
    "TOKEN_CLS": ("classifier", "score"),
    "QUESTION_ANS": ("qa_outputs",),
}


def task_heads(task_type: str | None, names: Iterable[str]) -> list[str]:
    """The task's head entries that name a module among `names` (dot boundaries)."""
    names = list(names)
    return [h for h in TASK_HEADS.get(task_type or "", ()) if any(entry_matches(n, h) for n in names)]


def with_task_heads(config: LoraConfig, names: Iterable[str]) -> LoraConfig:
    """`config` with its task's heads present among `names` appended to modules_to_save (once each)."""
    heads = task_heads(config.task_type, names)
    if not heads:
        return config
    saved = list(config.modules_to_save or [])
    return dataclasses.replace(config, modules_to_save=list(dict.fromkeys([*saved, *heads])))
