"""Rules for the damage an FSDP save leaves when the model was not gathered first (LG601 to LG605).

FSDP2 (``fully_shard``) turns parameters into DTensors sharded on dim 0: saving ``state_dict()`` as it is pickles
DTensors, and saving ``to_local()`` writes each rank's slice under the whole tensor's key. FSDP1 with
``use_orig_params`` turns them into 1-D views of one flat shard (empty on ranks that hold none of it). Saving the
wrapper's own state dict keeps its module prefix. A sharded ``torch.distributed.checkpoint`` is a directory of
``.distcp`` files, not an adapter. The checks read headers only (shapes, names), never tensor values.
"""

from __future__ import annotations

from loraguard.audit.pickle_scan import PickleScan
from loraguard.audit.rules import Finding
from loraguard.audit.tensors import TensorSource
from loraguard.core.config import LoraConfig
from loraguard.core.keys import parse_factor_key

#: Classes a pickle imports when it holds sharded tensors (FSDP2's DTensor, FSDP1's sharded state dict).
SHARDED_CLASSES = ("torch.distributed.tensor", "torch.distributed._tensor", "torch.distributed._shard")
#: Prefixes a wrapper adds to every key of its own state dict.
WRAPPER_SEGMENTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod", "_flat_param")
#: Factors that are matrices when whole (DoRA's lora_magnitude_vector is 1-D by design).
_MATRIX_ROLES = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B")
_GATHER = (
    "gather first: get_model_state_dict(model, options=StateDictOptions(full_state_dict=True)) "
    "and save that (peft: save_pretrained(dir, state_dict=...))"
)


def pickle_findings(path: str, scan: PickleScan) -> list[Finding]:
    """LG601: a pickle whose imports rebuild DTensors or sharded tensors."""
    sharded = sorted({i.dotted for i in scan.imports if i.module.startswith(SHARDED_CLASSES)})
    if not sharded:
        return []
    return [
        Finding(
            "LG601",
            path,
            f"imports {', '.join(sharded[:3])}: it holds FSDP shards (DTensor), each rank's piece of every "
            f"tensor, not the adapter; {_GATHER}",
        )
    ]


def tensor_findings(source: TensorSource, config: LoraConfig | None) -> list[Finding]:
    """LG602 to LG604 on one checkpoint's keys and shapes."""
    findings: list[Finding | None] = [_wrapper_prefix(ref.file, name) for name, ref in source.refs.items()]
    factors: dict[str, dict[str, tuple[int, ...]]] = {}
    names: dict[tuple[str, str], str] = {}
    for name, ref in source.refs.items():
        parsed = parse_factor_key(name)
        if parsed is None or parsed.param.endswith("bias"):
            continue
        factors.setdefault(parsed.module, {})[parsed.role] = ref.shape
        names[parsed.module, parsed.role] = name
        if len(ref.shape) == 1 and ref.numel > 0 and parsed.role in _MATRIX_ROLES:  # DoRA's magnitude is 1-D
            findings.append(
                Finding(
                    "LG602",
                    ref.file,
                    f"a LoRA factor with shape {list(ref.shape)}: a 1-D view of an FSDP1 flat shard "
                    f"(use_orig_params), and empty tensors in this file are the shards other ranks held; {_GATHER}",
                    name,
                )
            )
    for module, roles in factors.items():
        finding = _row_shard(module, roles, config)
        if finding is not None:
            role, message = finding
            name = names[module, role]
            findings.append(Finding("LG603", source.refs[name].file, message, name))
    return [f for f in findings if f is not None]


def _wrapper_prefix(file: str, name: str) -> Finding | None:
    segments = [s for s in name.split(".") if s in WRAPPER_SEGMENTS]
    if not segments:
        return None
    return Finding(
        "LG604",
        file,
        f"the key carries the wrapper's '{segments[0]}': saved from the FSDP (or checkpointing, compile) wrapper's "
        "state dict, so a load matches no module and keeps the untrained weights; save from the unwrapped model "
        "with the gathered full state dict",
        name,
    )


def _row_shard(module: str, roles: dict[str, tuple[int, ...]], config: LoraConfig | None) -> tuple[str, str] | None:
    """lora_A with a whole fraction (1/k, k > 1) of its rank's rows: a dim-0 shard saved as the whole tensor."""
    for a_role, b_role in (("lora_A", "lora_B"), ("lora_embedding_A", "lora_embedding_B")):
        a, b = roles.get(a_role), roles.get(b_role)
        if a is None or len(a) < 2 or a[0] == 0:
            continue
        if b is not None and len(b) == 2 and b[1] == a[0]:
            continue  # a dim-0 shard leaves lora_B's rank dimension whole; factors that agree are LG302's case
        rank = config.rank_for(module) if config is not None else (b[1] if b is not None and len(b) == 2 else None)
        if rank is None or a[0] >= rank or rank % a[0]:
            continue
        source = "the config's r / rank_pattern" if config is not None else f"its {b_role}"
        return a_role, (
            f"module '{module}': {a_role} has {a[0]} of the {rank} rows {source} gives (1/{rank // a[0]}): one "
            f"rank's dim-0 shard (FSDP2 to_local()) saved as the whole tensor; {_GATHER}"
        )
    return None


def dcp_directory(path: str, names: list[str]) -> Finding | None:
    """LG605: a torch.distributed.checkpoint directory (``.metadata`` beside ``*.distcp`` shards)."""
    if ".metadata" not in names or not any(n.endswith(".distcp") for n in names):
        return None
    return Finding(
        "LG605",
        path,
        "a sharded torch.distributed.checkpoint (.metadata and .distcp files), not an adapter or model file: "
        "consolidate it with torch.distributed.checkpoint.format_utils.dcp_to_torch_save(dir, 'model.pt'), or load it "
        "into the sharded model and save the gathered full state dict, then audit that",
    )
