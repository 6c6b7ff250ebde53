"""The audit rules about what a checkpoint holds: keys and config, factors, FSDP saves, merged models."""

from __future__ import annotations

from loraguard.audit.rule_spec import Rule

#: Key format and config (LG2xx), factors and values (LG3xx).
ADAPTER_RULES = [
    # key format and config
    Rule(
        "LG201",
        "adapter-name-in-key",
        "error",
        "A saved key still carries an adapter name (lora_A.default.weight, default.default): peft skips it on load.",
        detail=(
            "A key still carries an adapter name (`lora_A.default.weight`, `default.default`): peft silently "
            "skips it on load, so the merge applies nothing. Rename the key without it."
        ),
    ),
    Rule(
        "LG202",
        "untargeted-factor",
        "error",
        "A LoRA factor belongs to a module that the config's target_modules does not select.",
        detail="Factors for a module `target_modules` does not select: config and weights do not belong together.",
    ),
    Rule(
        "LG203",
        "unexpected-key",
        "error",
        "A tensor that is neither a LoRA factor nor a modules_to_save copy or bias the config asks for.",
        detail=(
            "Neither a factor nor a `modules_to_save` copy or bias the config asks for (`bias`, `lora_bias`); "
            "peft will not load it."
        ),
    ),
    Rule(
        "LG204",
        "ambiguous-entry",
        "warning",
        "A target_modules/modules_to_save entry selects modules of more than one family.",
        detail=(
            "A `modules_to_save` entry, or a dotted `target_modules` entry, selects modules of more than one "
            "family (`layers.0.fc` in `model` and `img_model`). Write the full path. Single-name target entries "
            "such as `q_proj` are meant to select many modules and are not flagged."
        ),
    ),
    Rule(
        "LG205",
        "raw-suffix-match",
        "error",
        "A key is selected only by a bare endswith match (peft's old modules_to_save bug), not at a dot boundary.",
        detail=(
            "A tensor selected only by a bare `endswith` (`img_model.layers.1.fc` for `model.layers.1.fc`): the "
            "writer matched names by raw suffix. peft 0.21.2 still does this for `modules_to_save`."
        ),
    ),
    Rule(
        "LG206",
        "invalid-config",
        "error",
        "adapter_config.json has an invalid field; config-dependent checks are skipped.",
        detail=(
            "A config field is invalid (message names the file and field, from `LoraConfig.from_json_dict`). "
            "Config-dependent checks are skipped; tensors are still audited."
        ),
    ),
    Rule(
        "LG207",
        "missing-saved-module",
        "warning",
        "A modules_to_save entry has no saved tensor in the file.",
        detail="A `modules_to_save` entry with no saved tensor: loading restores the untrained module.",
    ),
    Rule(
        "LG208",
        "no-factors",
        "error",
        "The adapter holds no LoRA factor at all.",
        detail="The adapter holds no LoRA factor.",
    ),
    Rule(
        "LG209",
        "pattern-timeout",
        "error",
        "A config regex took too long to match a module name (catastrophic backtracking); config checks stopped.",
        detail="A `target_modules` regex or a `rank_pattern`/`alpha_pattern` key did not finish matching one "
        "module name within its time bound (a pattern like `(a+)+c` backtracks exponentially). The config-dependent "
        "checks stop there; tensors are still audited. Write a pattern without nested repetition.",
    ),
    # factors and values
    Rule(
        "LG301",
        "unpaired-factor",
        "error",
        "A lora_A without its lora_B, or the reverse.",
        detail="A `lora_A` without its `lora_B`, or the reverse.",
    ),
    Rule(
        "LG302",
        "rank-mismatch",
        "error",
        "A factor's rank differs from r / rank_pattern, or A's rank differs from B's.",
        detail="A's rank (`shape[0]`) differs from B's (`shape[1]`), or from `r` / `rank_pattern` for that module.",
    ),
    Rule(
        "LG303",
        "zero-size",
        "error",
        "A tensor has no elements: an un-gathered DeepSpeed ZeRO-3 save.",
        detail="A tensor with no elements: a DeepSpeed ZeRO-3 save outside `GatheredParameters`.",
    ),
    Rule(
        "LG304",
        "zero-lora-b",
        "warning",
        "A layer's lora_B is all zero: that layer has no effect.",
        detail="One layer's `lora_B` is all zero: that layer does nothing.",
    ),
    Rule(
        "LG305",
        "adapter-no-effect",
        "error",
        "Every lora_B is all zero: the whole adapter has no effect.",
        detail="Every `lora_B` is all zero: saved before training, or weights never loaded. Replaces LG304.",
    ),
    Rule("LG306", "non-finite", "error", "A tensor holds NaN or Inf.", detail="NaN or Inf in a tensor."),
    Rule(
        "LG307",
        "factor-dtype-mismatch",
        "warning",
        "lora_A and lora_B of one layer have different dtypes.",
        detail="`lora_A` and `lora_B` of one layer have different dtypes.",
    ),
]

#: Un-gathered FSDP saves (LG6xx).
FSDP_RULES = [
    # un-gathered FSDP saves (loraguard/audit/fsdp.py)
    Rule(
        "LG601",
        "fsdp-dtensor-pickle",
        "error",
        "A pickle holds DTensors or sharded tensors: an FSDP state_dict() saved without gathering.",
        detail=(
            "A pickle imports `torch.distributed.tensor.DTensor` (or sharded-tensor classes): FSDP2's "
            "`state_dict()` saved as it is, each rank's shard. LG401 fires too."
        ),
    ),
    Rule(
        "LG602",
        "fsdp-flat-shard",
        "error",
        "A LoRA factor is 1-D: a view of an FSDP1 flat shard saved un-gathered.",
        detail=(
            "A LoRA factor is 1-D: a view of FSDP1's flat parameter (`use_orig_params=True`) saved un-gathered; "
            "the file's empty tensors are the shards other ranks held."
        ),
    ),
    Rule(
        "LG603",
        "fsdp-row-shard",
        "error",
        "lora_A holds 1/k of the rows its rank needs: one rank's dim-0 shard saved as the whole tensor.",
        detail=(
            "`lora_A` has r/k rows (k > 1) where the config's `r`/`rank_pattern` (or, without a config, its "
            "`lora_B`) says r: one rank's dim-0 shard (`DTensor.to_local()`) saved as the whole tensor."
        ),
    ),
    Rule(
        "LG604",
        "fsdp-wrapper-prefix",
        "error",
        "A key carries a wrapper's prefix (_fsdp_wrapped_module, _orig_mod...): a load matches no module.",
        detail=(
            "A key has a segment `_fsdp_wrapped_module`, `_checkpoint_wrapped_module`, `_orig_mod` or "
            "`_flat_param`: saved from the wrapper's state dict, so a load matches no module and silently keeps "
            "the untrained weights."
        ),
    ),
    Rule(
        "LG605",
        "fsdp-dcp-checkpoint",
        "error",
        "A sharded torch.distributed.checkpoint directory: consolidate it before auditing.",
        True,
        detail=(
            "A directory with `.metadata` and `*.distcp` files: a sharded `torch.distributed.checkpoint`. "
            "Consolidate it (`dcp_to_torch_save`) or load it into the sharded model and save the gathered state, "
            "then audit that."
        ),
    ),
]

#: Merged models (LG5xx).
MERGE_RULES = [
    # merged models
    Rule(
        "LG501",
        "merge-no-op",
        "error",
        "A merged tensor equals the base although the adapter changes it: the merge applied nothing.",
        detail=(
            "A merged tensor is bit-identical to the base although the delta changes it. One finding for the "
            "whole model when every adapted tensor is a no-op (peft's key-mismatch bug)."
        ),
    ),
    Rule(
        "LG502",
        "merge-mismatch",
        "error",
        "A merged tensor differs from W + s * B @ A beyond the dtype bound.",
        detail=(
            "max |merged - (W + s·B@A)| exceeds the dtype bound (NaN counts as exceeding). Check scaling and "
            "`fan_in_fan_out`."
        ),
    ),
    Rule(
        "LG503",
        "merge-structure",
        "error",
        "Base and merged models do not hold the same tensors with the same shapes.",
        detail="Tensors missing on one side, shapes that differ, or factors that do not fit the base tensor.",
    ),
    Rule(
        "LG504",
        "merge-untouched-changed",
        "error",
        "A tensor the adapter does not touch differs between base and merged model.",
        detail=(
            "A tensor the adapter does not touch differs from the base (bit-equal when dtypes agree), or a "
            "`modules_to_save` tensor differs from the adapter's copy."
        ),
    ),
    Rule(
        "LG505",
        "merge-effect-too-small",
        "info",
        "The adapter's effect on a tensor is within 10x the dtype bound, so merged and base cannot be told apart.",
        detail=(
            "The delta is within 10x (`EFFECT_MARGIN`) of the dtype bound: merged and unmerged look alike, so "
            "equality proves nothing."
        ),
    ),
    Rule(
        "LG506",
        "merge-not-verified",
        "info",
        "A merged tensor the audit cannot verify (lora_B bias, DoRA, target_parameters, no tolerance for its dtype).",
        detail=(
            "Not verified: a `lora_B` bias (merged into the layer bias), a DoRA adapter's weights, a parameter "
            "adapted through `target_parameters` other than a Linear-style `weight` (MoE expert stacks: the saved "
            "key names the module, not the parameter), or a dtype without a tolerance entry."
        ),
    ),
    Rule(
        "LG507",
        "layout-mismatch",
        "warning",
        "The factors fit a base weight only in the layout opposite to the config's fan_in_fan_out.",
        detail=(
            "The factors fit the base weight only in the layout opposite to the config's `fan_in_fan_out` (GPT-2 "
            "`Conv1D`, which peft transposes whatever the config says); checked in the layout that fits. Square "
            "layers cannot reveal this, so save the config with the layout the layers use."
        ),
    ),
]
