"""Every audit rule once: a stable ID, a severity and a one-line statement, and the Finding a rule produces.

IDs never change meaning once released. A rule marked `unusable` means the file could not be audited (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("info", "warning", "error")


@dataclass(frozen=True)
class Rule:
    """What the audit checks, as users and code-scanning tools see it."""

    id: str
    name: str
    severity: str
    summary: str
    unusable: bool = False


@dataclass(frozen=True)
class Finding:
    """One rule firing on one file (and key, when the problem belongs to a tensor)."""

    rule: str
    file: str
    message: str
    key: str = ""

    @property
    def severity(self) -> str:
        return RULES[self.rule].severity

    @property
    def unusable(self) -> bool:
        return RULES[self.rule].unusable


_RULES = [
    # input: the file or directory cannot be audited
    Rule(
        "LG001",
        "unreadable-input",
        "error",
        "The path cannot be read (missing, permission denied, symlink loop, I/O error).",
        True,
    ),
    Rule(
        "LG002",
        "not-a-checkpoint",
        "error",
        "The path holds no adapter, safetensors, index or pickle file the audit understands.",
        True,
    ),
    Rule(
        "LG003",
        "invalid-json",
        "error",
        "A JSON file (adapter config, shard index) is not valid UTF-8 JSON or not an object.",
        True,
    ),
    Rule(
        "LG004",
        "missing-shard",
        "error",
        "A shard index names a file that is not there, or keys that its shard does not hold.",
        True,
    ),
    # safetensors structure
    Rule(
        "LG101",
        "header-length",
        "error",
        "The 8-byte header length runs past the end of the file or exceeds the 100 MB cap.",
        True,
    ),
    Rule(
        "LG102",
        "header-json",
        "error",
        "The header is not a UTF-8 JSON object of well-formed tensor entries (dtype, shape, data_offsets).",
        True,
    ),
    Rule("LG103", "unknown-dtype", "error", "A tensor's dtype is not a safetensors dtype.", True),
    Rule("LG104", "offsets-overlap", "error", "Two tensors' byte ranges overlap.", True),
    Rule("LG105", "offsets-gap", "error", "Bytes between or after tensors belong to no tensor.", True),
    Rule("LG106", "offsets-past-end", "error", "A tensor's byte range runs past the end of the file.", True),
    Rule("LG107", "shape-span-mismatch", "error", "shape x dtype size differs from the tensor's byte span.", True),
    # key format and config
    Rule(
        "LG201",
        "adapter-name-in-key",
        "error",
        "A saved key still carries an adapter name (lora_A.default.weight, default.default): peft skips it on load.",
    ),
    Rule(
        "LG202",
        "untargeted-factor",
        "error",
        "A LoRA factor belongs to a module that the config's target_modules does not select.",
    ),
    Rule(
        "LG203",
        "unexpected-key",
        "error",
        "A tensor that is neither a LoRA factor nor a modules_to_save copy or bias the config asks for.",
    ),
    Rule(
        "LG204",
        "ambiguous-entry",
        "warning",
        "A target_modules/modules_to_save entry selects modules of more than one family.",
    ),
    Rule(
        "LG205",
        "raw-suffix-match",
        "error",
        "A key is selected only by a bare endswith match (peft's old modules_to_save bug), not at a dot boundary.",
    ),
    Rule(
        "LG206",
        "invalid-config",
        "error",
        "adapter_config.json has an invalid field; config-dependent checks are skipped.",
    ),
    Rule("LG207", "missing-saved-module", "warning", "A modules_to_save entry has no saved tensor in the file."),
    Rule("LG208", "no-factors", "error", "The adapter holds no LoRA factor at all."),
    # factors and values
    Rule("LG301", "unpaired-factor", "error", "A lora_A without its lora_B, or the reverse."),
    Rule(
        "LG302",
        "rank-mismatch",
        "error",
        "A factor's rank differs from r / rank_pattern, or A's rank differs from B's.",
    ),
    Rule("LG303", "zero-size", "error", "A tensor has no elements: an un-gathered DeepSpeed ZeRO-3 save."),
    Rule("LG304", "zero-lora-b", "warning", "A layer's lora_B is all zero: that layer has no effect."),
    Rule("LG305", "adapter-no-effect", "error", "Every lora_B is all zero: the whole adapter has no effect."),
    Rule("LG306", "non-finite", "error", "A tensor holds NaN or Inf."),
    Rule("LG307", "factor-dtype-mismatch", "warning", "lora_A and lora_B of one layer have different dtypes."),
    # pickle
    Rule(
        "LG401",
        "pickle-imports-code",
        "error",
        "A pickle imports a callable outside the torch tensor set: loading it can run code.",
    ),
    Rule(
        "LG402",
        "pickle-not-audited",
        "warning",
        "Pickle weights were scanned, not loaded; pass --allow-pickle for a trusted file.",
    ),
    Rule(
        "LG403",
        "pickle-unreadable",
        "error",
        "A pickle cannot be parsed, or torch.load(weights_only=True) refuses it.",
        True,
    ),
    # un-gathered FSDP saves (loraguard/audit/fsdp.py)
    Rule(
        "LG601",
        "fsdp-dtensor-pickle",
        "error",
        "A pickle holds DTensors or sharded tensors: an FSDP state_dict() saved without gathering.",
    ),
    Rule("LG602", "fsdp-flat-shard", "error", "A LoRA factor is 1-D: a view of an FSDP1 flat shard saved un-gathered."),
    Rule(
        "LG603",
        "fsdp-row-shard",
        "error",
        "lora_A holds 1/k of the rows its rank needs: one rank's dim-0 shard saved as the whole tensor.",
    ),
    Rule(
        "LG604",
        "fsdp-wrapper-prefix",
        "error",
        "A key carries a wrapper's prefix (_fsdp_wrapped_module, _orig_mod...): a load matches no module.",
    ),
    Rule(
        "LG605",
        "fsdp-dcp-checkpoint",
        "error",
        "A sharded torch.distributed.checkpoint directory: consolidate it before auditing.",
        True,
    ),
    # merged models
    Rule(
        "LG501",
        "merge-no-op",
        "error",
        "A merged tensor equals the base although the adapter changes it: the merge applied nothing.",
    ),
    Rule("LG502", "merge-mismatch", "error", "A merged tensor differs from W + s * B @ A beyond the dtype bound."),
    Rule(
        "LG503", "merge-structure", "error", "Base and merged models do not hold the same tensors with the same shapes."
    ),
    Rule(
        "LG504",
        "merge-untouched-changed",
        "error",
        "A tensor the adapter does not touch differs between base and merged model.",
    ),
    Rule(
        "LG505",
        "merge-effect-too-small",
        "info",
        "The adapter's effect on a tensor is within 10x the dtype bound, so merged and base cannot be told apart.",
    ),
    Rule(
        "LG506",
        "merge-not-verified",
        "info",
        "A merged tensor the audit cannot verify (lora_B bias, DoRA, no tolerance for its dtype).",
    ),
    Rule(
        "LG507",
        "layout-mismatch",
        "warning",
        "The factors fit a base weight only in the layout opposite to the config's fan_in_fan_out.",
    ),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def at_or_above(severity: str, threshold: str) -> bool:
    """True if `severity` is at least as serious as `threshold`."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)
