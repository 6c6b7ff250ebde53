"""What a path holds (adapter directory, named-adapter subfolders, safetensors file, shard index, pickle) and
auditing each: every problem becomes a Finding, never an exception, so one broken file never stops the others.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from loraguard.audit import fsdp
from loraguard.audit.adapter import audit_tensors
from loraguard.audit.pickle_scan import PickleScanError, scan_file
from loraguard.audit.rules import Finding
from loraguard.audit.safetensors_header import Header, HeaderError, read_header
from loraguard.audit.tensors import TensorSource
from loraguard.core.config import CONFIG_NAME, LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, ConfigError, LoraConfig
from loraguard.core.keys import parse_factor_key

INDEX_SUFFIX = ".safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")

#: Given a label and a byte count, a callback to report bytes read (or None for no progress display).
ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


class Unusable(Exception):
    """A file that cannot be audited at all; carries the finding that says why."""

    def __init__(self, finding: Finding):
        super().__init__(finding.message)
        self.finding = finding


@dataclass
class AuditResult:
    """Files looked at and what was found in them."""

    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def unusable(self) -> bool:
        return any(f.unusable for f in self.findings)


@dataclass(frozen=True)
class Options:
    allow_pickle: bool = False
    progress: ProgressFactory | None = None


def audit_paths(paths: list[str], options: Options = Options()) -> AuditResult:
    """Audit every path; problems with one path are findings on it, and the others are still audited."""
    result = AuditResult()
    for path in paths:
        try:
            _audit_path(path, options, result)
        except Unusable as err:
            result.findings.append(err.finding)
    return result


def regular_file(path: str) -> int:
    """The size of `path` if it is a readable regular file; Unusable (LG001) otherwise, before anything opens it."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None
    if not stat.S_ISREG(st.st_mode):
        raise Unusable(Finding("LG001", path, "not a regular file (a device, pipe or socket is never opened)"))
    return st.st_size


def header_of(path: str, result: AuditResult) -> Header:
    """The validated safetensors header of `path`, or Unusable with the rule it breaks."""
    regular_file(path)
    result.files.append(path)
    try:
        return read_header(path)
    except HeaderError as err:
        raise Unusable(Finding(err.rule, path, str(err).removeprefix(f"{path}: "))) from None
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None


def read_json_object(path: str, result: AuditResult) -> dict:
    """A JSON object from `path`, or Unusable (LG001/LG003) naming what is wrong with it."""
    size = regular_file(path)
    result.files.append(path)
    if size > 64 << 20:
        raise Unusable(Finding("LG003", path, f"{size} bytes is too large for a JSON config or index"))
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None
    except UnicodeDecodeError as err:
        raise Unusable(Finding("LG003", path, f"not UTF-8 (byte {err.start})")) from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise Unusable(Finding("LG003", path, f"not valid JSON ({str(err)[:120]})")) from None
    if not isinstance(data, dict):
        raise Unusable(Finding("LG003", path, f"JSON {type(data).__name__}, expected an object"))
    return data


def _audit_path(path: str, options: Options, result: AuditResult) -> None:
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None
    if is_dir:
        _audit_directory(path, options, result)
    elif path.endswith(INDEX_SUFFIX):
        _audit_index(path, options, result)
    elif os.path.basename(path) in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME) and os.path.exists(
        os.path.join(os.path.dirname(path) or ".", CONFIG_NAME)
    ):
        _audit_adapter(os.path.dirname(path) or ".", options, result)
    elif path.endswith((".safetensors", *PICKLE_SUFFIXES)):
        _audit_file(path, options, result)
    else:
        raise Unusable(
            Finding(
                "LG002",
                path,
                "not a file type the audit reads: expected an adapter directory, "
                f"*.safetensors, *{INDEX_SUFFIX} or a pickle ({', '.join(PICKLE_SUFFIXES)})",
            )
        )


def _audit_directory(path: str, options: Options, result: AuditResult) -> None:
    """An adapter (and peft's named adapters in subfolders), or else a model's index, safetensors and pickle files."""
    try:
        names = sorted(os.listdir(path))
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot list: {err.strerror or err}")) from None
    adapters = ([path] if CONFIG_NAME in names else []) + [
        os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n, CONFIG_NAME))
    ]
    units: list[tuple[Callable, str]] = [(_audit_adapter, d) for d in adapters]
    if not adapters:
        indexes = [os.path.join(path, n) for n in names if n.endswith(INDEX_SUFFIX)]
        sharded = {shard for i in indexes for shard in _shard_names(i)}
        units += [(_audit_index, i) for i in indexes]
        units += [
            (_audit_file, os.path.join(path, n))
            for n in names
            if (n.endswith(".safetensors") and n not in sharded) or n.endswith(PICKLE_SUFFIXES)
        ]
    if not units:
        raise Unusable(
            fsdp.dcp_directory(path, names)
            or Finding(
                "LG002",
                path,
                f"no {CONFIG_NAME}, adapter subfolder, *.safetensors, index or pickle "
                "file here; point the audit at an adapter or model directory",
            )
        )
    for audit, unit in units:
        try:
            audit(unit, options, result)
        except Unusable as err:
            result.findings.append(err.finding)


def _audit_file(path: str, options: Options, result: AuditResult) -> None:
    if path.endswith(".safetensors"):
        _audit_source(TensorSource.from_headers([header_of(path, result)]), None, options, result, path)
    else:
        _audit_pickle(path, None, options, result)


def _shard_names(index_path: str) -> set[str]:
    """Best-effort list of the files an index names (for directory discovery; _audit_index validates properly)."""
    try:
        with open(index_path, "rb") as f:
            weight_map = json.loads(f.read().decode("utf-8")).get("weight_map", {})
        return {v for v in weight_map.values() if isinstance(v, str)}
    except (OSError, ValueError, AttributeError, RecursionError):
        return set()


def _audit_adapter(directory: str, options: Options, result: AuditResult) -> None:
    config_path = os.path.join(directory, CONFIG_NAME)
    config = None
    try:
        config = LoraConfig.from_json_dict(read_json_object(config_path, result), config_path)
    except ConfigError as err:
        result.findings.append(
            Finding("LG206", config_path, f"{err}; fix the field (config-dependent checks were skipped)")
        )
    except Unusable as err:
        result.findings.append(err.finding)
    weights, legacy = os.path.join(directory, WEIGHTS_NAME), os.path.join(directory, LEGACY_WEIGHTS_NAME)
    if os.path.lexists(weights):
        _audit_source(TensorSource.from_headers([header_of(weights, result)]), config, options, result, weights, True)
    elif os.path.lexists(legacy):
        _audit_pickle(legacy, config, options, result, True)
    else:
        raise Unusable(
            Finding("LG002", directory, f"adapter directory without {WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME}")
        )


def _audit_index(index_path: str, options: Options, result: AuditResult) -> None:
    _audit_source(TensorSource.from_headers(index_headers(index_path, result)), None, options, result, index_path)


def index_headers(index_path: str, result: AuditResult) -> list[Header]:
    """A sharded model's headers: the index must name existing shards in its own folder, and agree with them."""
    weight_map = read_json_object(index_path, result).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise Unusable(
            Finding("LG003", index_path, "'weight_map' must be an object mapping tensor names to shard files")
        )
    folder = os.path.dirname(index_path) or "."
    headers: list[Header] = []
    for shard in sorted(set(weight_map.values())):
        if os.path.basename(shard) != shard:
            raise Unusable(Finding("LG004", index_path, f"shard '{shard}' is not a file name in the index's folder"))
        if not os.path.lexists(os.path.join(folder, shard)):
            raise Unusable(Finding("LG004", index_path, f"shard '{shard}' is missing"))
        header = header_of(os.path.join(folder, shard), result)
        named = {k for k, v in weight_map.items() if v == shard}
        if named != set(header.tensors):
            odd = sorted(named ^ set(header.tensors))
            raise Unusable(
                Finding(
                    "LG004", header.file, f"the index and this shard disagree on {len(odd)} key(s), e.g. '{odd[0]}'"
                )
            )
        headers.append(header)
    return headers


def _audit_source(
    source: TensorSource,
    config: LoraConfig | None,
    options: Options,
    result: AuditResult,
    label: str,
    is_adapter: bool = False,
) -> None:
    is_adapter = is_adapter or any(parse_factor_key(k) is not None for k in source.refs)
    total = sum(r.nbytes for r in source.refs.values())
    on_read = options.progress(label, total) if options.progress else None
    with source:
        try:
            result.findings += audit_tensors(source, config, on_read or (lambda n: None), is_adapter)
            result.findings += fsdp.tensor_findings(source, config)
        except OSError as err:
            raise Unusable(Finding("LG001", label, f"read failed: {err.strerror or err}")) from None


def _audit_pickle(
    path: str, config: LoraConfig | None, options: Options, result: AuditResult, is_adapter: bool = False
) -> None:
    """Scan the pickle's imports; load it (weights_only) only when the user vouches for it and the scan is clean."""
    regular_file(path)
    result.files.append(path)
    try:
        scan = scan_file(path)
    except (PickleScanError, OSError) as err:
        raise Unusable(Finding("LG403", path, f"cannot scan: {err}")) from None
    result.findings += fsdp.pickle_findings(path, scan)
    if scan.unsafe:
        shown = ", ".join(f"{i.dotted} ({i.opcode})" for i in scan.unsafe[:5])
        result.findings.append(
            Finding(
                "LG401",
                path,
                f"imports {shown}: unpickling calls them ({scan.calls} call opcodes), "
                "so loading this file can run code; do not load it. Tensors were not audited.",
            )
        )
        return
    if not options.allow_pickle:
        result.findings.append(
            Finding(
                "LG402",
                path,
                f"pickle imports only torch tensor rebuilders ({len(scan.imports)} "
                "imports); its tensors were not audited. Re-run with --allow-pickle if you trust "
                "the file, or convert it to safetensors",
            )
        )
        return
    _audit_source(_load_trusted(path), config, options, result, path, is_adapter)


def _load_trusted(path: str) -> TensorSource:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a bad archive; each is this one finding
        raise Unusable(Finding("LG403", path, f"torch.load(weights_only=True) refused it: {str(err)[:200]}")) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise Unusable(Finding("LG403", path, "not a state dict (a mapping of names to tensors)"))
    try:
        return TensorSource.from_state_dict(path, state)
    except ValueError as err:
        raise Unusable(Finding("LG403", path, str(err))) from None
