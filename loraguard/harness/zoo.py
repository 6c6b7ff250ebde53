"""The built-in tiny models: each built in code from a config (nothing downloaded), with inputs and LoRA targets.

Every model is small enough that one forward takes well under a millisecond on CPU, and together they cover
Linear, GPT-2 Conv1D (fan_in_fan_out), Embedding, Conv1d/Conv2d, and adversarial module names. This table imports
no torch: its builders and inputs (loraguard.harness.zoo_models, zoo_hf) load when first called, so a
pytest-xdist controller checks ``--loraguard-zoo`` names without importing torch before its workers start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loraguard.harness import zoo_hf as hf

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Model families (loraguard.backends.base.FAMILIES): a backend wraps only the families in its ``wrappable``.
PLAIN, TRANSFORMERS = "plain", "transformers"


@dataclass(frozen=True)
class ZooModel:
    """A tiny model recipe: how to build it, what to feed it, and which modules a LoRA config should target.

    - `name`: the scenario id's first part; `build`: a function returning a fresh model (weights from the global
      torch seed); `inputs`: a function of a ``torch.Generator`` returning the forward's positional arguments.
    - `target_modules` / `modules_to_save`: the first adapter's, as in a ``LoraConfig``.
    - `second_targets` / `second_modules_to_save`: the second adapter ("other") of two-adapter invariants
      (default: the first adapter's targets, no modules_to_save); choose other modules to test isolation.
    - `needs`: Python modules that must import for the model to be built (``("transformers",)``); a model whose
      needs are missing is left out of the zoo.
    - `task_type`: peft's task type (``"SEQ_CLS"``...), for a model built the way users build task models.
    - `target_parameters`: parameters adapted directly (MoE expert stacks), by both adapters.
    - `family`: ``"plain"`` (any torch modules) or ``"transformers"`` (a ``PreTrainedModel``); a backend that
      cannot wrap the family skips the model's scenarios with that reason. The layer kinds a scenario needs
      (Linear, Embedding, Conv, GPT-2 Conv1D) are read off the built model, not declared.
    """

    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], tuple]
    target_modules: list[str] | str
    modules_to_save: list[str] = field(default_factory=list)
    needs: tuple[str, ...] = ()
    task_type: str | None = None  # peft's task type, for models built the way users build task models
    family: str = PLAIN
    second_targets: list[str] | str | None = None
    second_modules_to_save: list[str] | None = None
    target_parameters: list[str] | None = None  # both adapters' (peft wants one parameter set per model)

    def make(self, seed: int = 0, dtype: torch.dtype | None = None, device: str = "cpu") -> nn.Module:
        """A fresh instance with deterministic weights for `seed`, in `dtype` (float32 by default)."""
        import torch

        torch.manual_seed(seed)
        model = self.build().to(device=device, dtype=dtype or torch.float32)
        return model.eval()

    def example(self, seed: int = 0, device: str = "cpu") -> tuple:
        """Deterministic inputs for `seed`."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        return tuple(t.to(device) for t in self.inputs(gen))


@dataclass(frozen=True)
class Lazy:
    """The function `name` of loraguard.harness.zoo_models, called with the call's arguments then `args`, imported on
    the first call. Equal for equal names and arguments, so it keys the per-process caches as the function would."""

    name: str
    args: tuple = ()

    def __call__(self, *call_args: Any) -> Any:
        from loraguard.harness import zoo_models

        return getattr(zoo_models, self.name)(*call_args, *self.args)


def run(model: nn.Module, inputs: tuple, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Forward `inputs` through a base, reference or peft-wrapped model and return the output tensor."""
    if dtype is not None:
        inputs = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    out = model(*inputs)
    return getattr(out, "logits", out)


def _ids(vocab: int, length: int) -> Lazy:
    return Lazy("token_ids", (vocab, length))


_TF = ("transformers",)
_T: dict[str, Any] = {"needs": _TF, "family": TRANSFORMERS}

ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in [
        ZooModel("mlp", Lazy("MLP"), Lazy("randn", (3, 8)), ["fc1", "fc2"], ["head"], second_targets=["fc1"]),
        ZooModel(
            "convnet",
            Lazy("ConvNet"),
            Lazy("randn", (2, 3, 5, 5)),
            ["conv1", "conv2", "seq"],
            ["head"],
            second_targets=["conv2"],
        ),
        ZooModel(
            "embedding", Lazy("EmbeddingModel"), _ids(20, 5), ["wte", "proj"], ["lm_head"], second_targets=["proj"]
        ),
        ZooModel("scaled-embedding", Lazy("ScaledEmbeddingModel"), _ids(20, 5), ["wte", "proj"], ["lm_head"]),
        ZooModel("tied-embedding", Lazy("TiedEmbeddingModel"), _ids(20, 5), ["wte", "proj"]),
        ZooModel(
            "nested",
            Lazy("NestedNames"),
            Lazy("randn", (3, 8)),
            ["model.layers.0.fc", "fc_out"],
            ["model.layers.1.fc"],
            second_targets=["fc_out"],
            second_modules_to_save=["xhead"],
        ),
        # target_parameters: the 3D expert stacks and the router's 2D weight, beside a Linear target; placed after
        # the plain models most mutants are caught on, so tests/test_mutants.py reaches it only for its own mutant
        ZooModel(
            "moe",
            Lazy("MoE"),
            Lazy("randn", (5, 8)),
            ["shared"],
            ["head"],
            target_parameters=["experts.gate_up_proj", "experts.down_proj", "router.weight"],
            second_targets=[],
        ),
        ZooModel(
            "llama",
            hf.llama,
            _ids(32, 6),
            ["q_proj", "v_proj", "gate_proj"],
            ["lm_head"],
            second_targets=["v_proj", "down_proj"],
            second_modules_to_save=["model.norm"],
            **_T,
        ),
        ZooModel("gpt2", hf.gpt2, _ids(32, 6), ["c_attn", "c_proj"], ["ln_f"], second_targets=["c_fc"], **_T),
        ZooModel(  # adapters' LoRA roles: attention q/v, then v and the MLP's first linear ("intermediate")
            "bert",
            hf.bert,
            _ids(32, 6),
            ["query", "value"],
            ["cls.predictions.transform.dense"],
            second_targets=["value", "intermediate.dense"],
            **_T,
        ),
        # task models: peft adds the classification heads to modules_to_save itself; LMs list lm_head. Targets
        # reach past the attention (dense, fc, gate_proj), so the adapter's effect clears the bfloat16 bound
        ZooModel(
            "bert-tokcls",
            hf.bert_tokcls,
            _ids(32, 6),
            ["query", "value", "dense"],
            needs=_TF,
            task_type="TOKEN_CLS",
            family=TRANSFORMERS,
        ),
        ZooModel(
            "llama-seqcls",
            hf.llama_seqcls,
            _ids(32, 6),
            ["q_proj", "v_proj", "gate_proj"],
            needs=_TF,
            task_type="SEQ_CLS",
            family=TRANSFORMERS,
        ),
        ZooModel(
            "llama-causal", hf.llama, _ids(32, 6), ["q_proj", "v_proj"], ["lm_head"], _TF, "CAUSAL_LM", TRANSFORMERS
        ),
        ZooModel(
            "bart-seq2seq",
            hf.bart_seq2seq,
            _ids(32, 6),
            ["q_proj", "v_proj", "fc1", "fc2"],
            ["lm_head"],
            _TF,
            "SEQ_2_SEQ_LM",
            TRANSFORMERS,
        ),
    ]
}


def available(names: list[str] | None = None) -> list[ZooModel]:
    """Zoo entries whose optional dependencies import; `names` picks a subset (unknown names are an error)."""
    import importlib.util

    if names:
        unknown = [n for n in names if n not in ZOO]
        if unknown:
            raise ValueError(f"unknown zoo model(s) {unknown}; choose from {sorted(ZOO)}")
    picked = [ZOO[n] for n in names] if names else list(ZOO.values())
    return [m for m in picked if all(importlib.util.find_spec(d) is not None for d in m.needs)]
