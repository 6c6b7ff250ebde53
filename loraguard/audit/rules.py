"""Every audit rule once: a stable ID, a severity and a one-line statement, and the Finding a rule produces.

IDs never change meaning once released. A rule marked `unusable` means the file could not be audited (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("info", "warning", "error")

#: Longest message or key a finding carries.
MAX_MESSAGE = 2000
#: The rule reference that SARIF `helpUri` points to (one place to change if the docs move).
DOCS_URL = "https://github.com/loraguard/loraguard/blob/main/docs/audit.md"
#: The heading of docs/audit.md that holds each rule family's table, as GitHub anchors it.
SECTIONS = {
    "LG0": "input-lg0xx",
    "LG1": "safetensors-structure-lg1xx",
    "LG2": "keys-and-config-lg2xx",
    "LG3": "factors-and-values-lg3xx",
    "LG4": "pickles-lg4xx",
    "LG5": "merged-models-lg5xx",
    "LG6": "un-gathered-fsdp-saves-lg6xx",
}


@dataclass(frozen=True)
class Rule:
    """What the audit checks, as users and code-scanning tools see it."""

    id: str
    name: str
    severity: str
    summary: str
    unusable: bool = False
    #: The rule's documentation (the row of docs/audit.md), shipped in the package for `audit --explain`.
    detail: str = ""

    @property
    def help_uri(self) -> str:
        return f"{DOCS_URL}#{SECTIONS[self.id[:3]]}"


@dataclass(frozen=True)
class Finding:
    """One rule firing on one file (and key, when the problem belongs to a tensor)."""

    rule: str
    file: str
    message: str
    key: str = ""

    def __post_init__(self) -> None:
        # Messages and keys can quote a hostile file: bound them so one finding never floods a report.
        if len(self.message) > MAX_MESSAGE:
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE - 3] + "...")
        if len(self.key) > MAX_MESSAGE:
            object.__setattr__(self, "key", self.key[: MAX_MESSAGE - 3] + "...")

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
        detail=(
            "The path is missing, unreadable (permissions, I/O error) or a symlink loop or dangling symlink. Fix "
            "the path or permissions."
        ),
    ),
    Rule(
        "LG002",
        "not-a-checkpoint",
        "error",
        "The path holds no adapter, safetensors, index or pickle file the audit understands.",
        True,
        detail=(
            "No adapter config, adapter subfolder, safetensors, index or pickle file; or an adapter directory "
            "without weights. Point the audit at an adapter or model directory."
        ),
    ),
    Rule(
        "LG003",
        "invalid-json",
        "error",
        "A JSON file (adapter config, shard index) is not valid UTF-8 JSON or not an object.",
        True,
        detail="`adapter_config.json` or a shard index is not UTF-8 JSON, or not an object. Re-save it.",
    ),
    Rule(
        "LG004",
        "missing-shard",
        "error",
        "A shard index names a file that is not there, or keys that its shard does not hold.",
        True,
        detail=(
            "The index names a shard that is missing or outside its folder, or the index and a shard disagree on "
            "the keys. Re-save the model."
        ),
    ),
    Rule(
        "LG005",
        "not-a-regular-file",
        "error",
        "A file a loader would read is a FIFO, device or socket, or a symlink to one: it is never opened.",
        True,
        detail="A FIFO, device or socket (or a symlink to one) under a name a loader reads (weights, pickle, config, "
        "index). Opening it could block or read without end (`/dev/zero`), so the audit never does. Replace it with "
        "the real file.",
    ),
    Rule(
        "LG006",
        "walk-limit",
        "error",
        "The directory tree is deeper or holds more files than the audit walks; the rest was not audited.",
        True,
        detail="The walk stops below 32 directory levels or after 100,000 entries, so a hostile tree cannot keep "
        "it busy forever. Audit the subfolders that hold checkpoints one by one.",
    ),
    # safetensors structure
    Rule(
        "LG101",
        "header-length",
        "error",
        "The 8-byte header length runs past the end of the file or exceeds the 100 MB cap.",
        True,
        detail="The header length runs past the file or the cap: truncated, or not safetensors.",
    ),
    Rule(
        "LG102",
        "header-json",
        "error",
        "The header is not a UTF-8 JSON object of well-formed tensor entries (dtype, shape, data_offsets).",
        True,
        detail=(
            "The header is not UTF-8, not JSON, not an object, names a tensor twice, or has a malformed entry or "
            "`__metadata__`."
        ),
    ),
    Rule(
        "LG103",
        "unknown-dtype",
        "error",
        "A tensor's dtype is not a safetensors dtype.",
        True,
        detail="A dtype that is not a safetensors dtype.",
    ),
    Rule(
        "LG104",
        "offsets-overlap",
        "error",
        "Two tensors' byte ranges overlap.",
        True,
        detail="Two tensors share bytes.",
    ),
    Rule(
        "LG105",
        "offsets-gap",
        "error",
        "Bytes between or after tensors belong to no tensor.",
        True,
        detail="Bytes between or after the tensors belong to none of them.",
    ),
    Rule(
        "LG106",
        "offsets-past-end",
        "error",
        "A tensor's byte range runs past the end of the file.",
        True,
        detail="A tensor runs past the end of the file: the file is truncated.",
    ),
    Rule(
        "LG107",
        "shape-span-mismatch",
        "error",
        "shape x dtype size differs from the tensor's byte span.",
        True,
        detail="shape x dtype size is not the tensor's byte span.",
    ),
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
    # pickle
    Rule(
        "LG401",
        "pickle-imports-code",
        "error",
        "A pickle imports a callable outside the torch tensor set: loading it can run code.",
        detail="Imports anything else (`os.system`, `builtins.eval`...): loading would call it. Never loaded.",
    ),
    Rule(
        "LG402",
        "pickle-not-audited",
        "warning",
        "Pickle weights were scanned, not loaded; pass --allow-pickle for a trusted file.",
        detail=(
            "Only tensor imports; tensors not audited. Use `--allow-pickle` for a file you trust, or convert to "
            "safetensors."
        ),
    ),
    Rule(
        "LG403",
        "pickle-unreadable",
        "error",
        "A pickle cannot be parsed, or torch.load(weights_only=True) refuses it.",
        True,
        detail="Not a parseable pickle or torch archive, or `torch.load(weights_only=True)` refused it.",
    ),
    Rule(
        "LG404",
        "archive-member-unreadable",
        "error",
        "A zip member is encrypted, uses an unknown compression method, or is damaged: it cannot be scanned.",
        True,
        detail="A `*.pkl` member of a zip archive is encrypted, compressed with a method other than stored, deflate, "
        "bzip2 or lzma, or damaged, so its pickle cannot be scanned. Never load the file.",
    ),
    Rule(
        "LG405",
        "size-cap",
        "error",
        "A compressed member inflates past the audit's cap, or a file exceeds what the audit reads.",
        True,
        detail="A zip member inflates past 64 MiB (or 16x its compressed size, whichever is more), a JSON file is "
        "larger than 64 MiB, or an archive has too many members. The rest was not scanned (a decompression bomb "
        "costs nothing). Never load the file.",
    ),
    Rule(
        "LG406",
        "unscannable-content",
        "error",
        "A loader would run content the audit cannot scan (TorchScript code, an odd legacy tar record).",
        True,
        detail="A TorchScript archive (torch.load hands it to torch.jit.load, whose code is not audited) or a legacy "
        "tar archive whose members do not follow torch's layout or are links. Neither provably safe nor scannable: "
        "do not load it.",
    ),
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
        "A merged tensor the audit cannot verify (lora_B bias, DoRA, no tolerance for its dtype).",
        detail=(
            "Not verified: a `lora_B` bias (merged into the layer bias), a DoRA adapter's weights, or a dtype "
            "without a tolerance entry."
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

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def at_or_above(severity: str, threshold: str) -> bool:
    """True if `severity` is at least as serious as `threshold`."""
    return SEVERITIES.index(severity) >= SEVERITIES.index(threshold)
