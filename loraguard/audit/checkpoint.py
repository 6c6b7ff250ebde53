"""What a path holds (adapter directory, named-adapter subfolders, safetensors file, shard index, pickle) and
auditing each: every problem becomes a Finding, never an exception, so one broken file never stops the others.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from loraguard.audit import discover, fsdp
from loraguard.audit.adapter import audit_tensors, ref_file
from loraguard.audit.discover import INDEX_SUFFIX, Entry
from loraguard.audit.pickle_files import scan_file
from loraguard.audit.rules import Finding
from loraguard.audit.safe_io import MAX_JSON_BYTES, Unusable, read_capped, regular_size
from loraguard.audit.safetensors_header import Header, HeaderError, read_header
from loraguard.audit.tensors import TensorSource
from loraguard.core.config import CONFIG_NAME, LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, ConfigError, LoraConfig
from loraguard.core.keys import parse_factor_key
from loraguard.core.matching import PatternError

__all__ = ["INDEX_SUFFIX", "AuditResult", "Options", "Unusable", "audit_paths", "header_of", "index_headers"]

#: Given a label and a byte count, a callback to report bytes read (or None for no progress display).
ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


@dataclass
class AuditResult:
    """Files looked at, files skipped (with the reason) and what was found."""

    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

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


def header_of(path: str, result: AuditResult) -> Header:
    """The validated safetensors header of `path`, or Unusable with the rule it breaks."""
    regular_size(path)
    result.files.append(path)
    try:
        return read_header(path)
    except HeaderError as err:
        raise Unusable(Finding(err.rule, path, str(err).removeprefix(f"{path}: "))) from None
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None


def read_json_object(path: str, result: AuditResult) -> dict:
    """A JSON object from `path`, or Unusable (LG001/LG003/LG005/LG405) naming what is wrong with it."""
    regular_size(path)
    result.files.append(path)
    try:
        data = json.loads(read_capped(path, MAX_JSON_BYTES, "LG405").decode("utf-8"))
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None
    except UnicodeDecodeError as err:
        raise Unusable(Finding("LG003", path, f"not UTF-8 (byte {err.start})")) from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise Unusable(Finding("LG003", path, f"not valid JSON ({str(err)[:120]})")) from None
    except ValueError as err:  # an integer past Python's int-to-str digit limit (thousands of digits)
        raise Unusable(Finding("LG003", path, f"a number in it cannot be read ({str(err)[:100]})")) from None
    if not isinstance(data, dict):
        raise Unusable(Finding("LG003", path, f"JSON {type(data).__name__}, expected an object"))
    return data


def _audit_path(path: str, options: Options, result: AuditResult) -> None:
    try:
        os.lstat(path)
        is_dir = os.path.isdir(path)
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"cannot read: {err.strerror or err}")) from None
    if is_dir:
        _audit_tree(path, options, result)
        return
    folder, name = os.path.dirname(path) or ".", os.path.basename(path)
    if name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME, CONFIG_NAME) and os.path.lexists(os.path.join(folder, CONFIG_NAME)):
        _audit_adapter(folder, name if name != CONFIG_NAME else _adapter_weights(folder), options, result)
        return
    entry = discover.classify(path)
    if entry.kind == discover.SKIP:
        raise Unusable(
            Finding(
                "LG002",
                path,
                f"{entry.reason}; expected an adapter directory, *.safetensors, *{INDEX_SUFFIX}, a pickle or a torch "
                "archive",
            )
        )
    _audit_entry(entry, options, result)


def _audit_tree(root: str, options: Options, result: AuditResult) -> None:
    """Every file at any depth: adapters, indexes and their shards, then each remaining file by its kind."""
    before = len(result.files) + len(result.findings)
    outside: list[str] = []
    try:
        for directory, names in discover.walk(root, outside):
            _audit_directory(directory, names, options, result)
    except Unusable as err:
        result.findings.append(err.finding)
    result.skipped += [(path, "a symlink to a folder outside the audited tree: not followed") for path in outside]
    if len(result.files) + len(result.findings) == before:
        skipped = f" ({len(result.skipped)} other file(s) skipped)" if result.skipped else ""
        raise Unusable(
            Finding(
                "LG002",
                root,
                f"no {CONFIG_NAME}, safetensors, index, pickle or torch archive anywhere below{skipped}; "
                "point the audit at an adapter or model directory",
            )
        )


def _adapter_weights(directory: str) -> str:
    """The weights file peft loads for an adapter directory: safetensors first, else the legacy pickle."""
    for name in (WEIGHTS_NAME, LEGACY_WEIGHTS_NAME):
        if os.path.lexists(os.path.join(directory, name)):
            return name
    return ""


def _audit_directory(directory: str, names: list[str], options: Options, result: AuditResult) -> None:
    """One directory's files: each is audited once, as part of an adapter or index or on its own, or skipped."""
    done: set[str] = set()
    dcp = fsdp.dcp_directory(directory, names)
    if dcp is not None:  # its .distcp shards hold raw tensor bytes: the finding says how to consolidate them
        result.findings.append(dcp)
        done |= {n for n in names if n.endswith(".distcp")}

    def attempt(audit: Callable[[], None]) -> None:
        try:
            audit()
        except Unusable as err:
            result.findings.append(err.finding)

    if CONFIG_NAME in names:
        weights = _adapter_weights(directory)
        done |= {CONFIG_NAME, weights}
        attempt(lambda: _audit_adapter(directory, weights, options, result))
    for name in names:
        if name not in done and discover.kind_by_name(name) == discover.INDEX:
            done.add(name)
            index = os.path.join(directory, name)
            try:
                done |= _audit_index(index, options, result)
            except Unusable as err:
                result.findings.append(err.finding)
    for name in names:
        if name in done:
            continue
        try:
            entry = discover.classify(os.path.join(directory, name))
        except Unusable as err:
            result.findings.append(err.finding)
            continue
        if entry.kind == discover.SKIP:
            result.skipped.append((entry.path, entry.reason))
        else:
            attempt(functools.partial(_audit_entry, entry, options, result))


def _audit_entry(entry: Entry, options: Options, result: AuditResult) -> None:
    if entry.kind == discover.SAFETENSORS:
        _audit_source(TensorSource.from_headers([header_of(entry.path, result)]), None, options, result, entry.path)
    elif entry.kind == discover.INDEX:
        _audit_index(entry.path, options, result)
    elif entry.kind == discover.CONFIG:
        folder = os.path.dirname(entry.path) or "."
        _audit_adapter(folder, _adapter_weights(folder), options, result)
    else:
        _audit_pickle(entry.path, None, options, result)


def _audit_adapter(directory: str, weights: str, options: Options, result: AuditResult) -> None:
    """adapter_config.json with the weights file `weights` (a name in `directory`) that goes with it."""
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
    if not weights:
        raise Unusable(
            Finding("LG002", directory, f"adapter directory without {WEIGHTS_NAME} or {LEGACY_WEIGHTS_NAME}")
        )
    path = os.path.join(directory, weights)
    if weights.lower().endswith(".safetensors"):
        _audit_source(TensorSource.from_headers([header_of(path, result)]), config, options, result, path, True)
    else:
        _audit_pickle(path, config, options, result, True)


def _audit_index(index_path: str, options: Options, result: AuditResult) -> set[str]:
    """Audit a sharded model as one checkpoint; the shard names it covers."""
    headers = index_headers(index_path, result)
    _audit_source(TensorSource.from_headers(headers), None, options, result, index_path)
    return {os.path.basename(h.file) for h in headers}


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
        if os.path.basename(shard) != shard or shard in ("", ".", ".."):
            raise Unusable(Finding("LG004", index_path, f"shard {shard!r} is not a file name in the index's folder"))
        if not os.path.lexists(os.path.join(folder, shard)):
            raise Unusable(Finding("LG004", index_path, f"shard {shard!r} is missing"))
        header = header_of(os.path.join(folder, shard), result)
        named = {k for k, v in weight_map.items() if v == shard}
        if named != set(header.tensors):
            odd = sorted(named ^ set(header.tensors))
            raise Unusable(
                Finding(
                    "LG004", header.file, f"the index and this shard disagree on {len(odd)} key(s), e.g. {odd[0]!r}"
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
            result.findings += _fsdp_findings(source, config, result)
        except OSError as err:
            raise Unusable(Finding("LG001", label, f"read failed: {err.strerror or err}")) from None


def _fsdp_findings(source: TensorSource, config: LoraConfig | None, result: AuditResult) -> list[Finding]:
    """The FSDP rules; after a config regex timed out (LG209) they go without the config, like the adapter checks."""
    file = ref_file(source)
    if any(f.rule == "LG209" and f.file == file for f in result.findings):
        config = None
    try:
        return fsdp.tensor_findings(source, config)
    except PatternError as err:
        return [Finding("LG209", file, f"{err}; the config-dependent checks stopped here")]


def _audit_pickle(
    path: str, config: LoraConfig | None, options: Options, result: AuditResult, is_adapter: bool = False
) -> None:
    """Scan every pickle torch would run; load (weights_only) only when the user vouches and the scan is clean."""
    regular_size(path)
    result.files.append(path)
    try:
        scan = scan_file(path)
    except OSError as err:
        raise Unusable(Finding("LG001", path, f"read failed: {err.strerror or err}")) from None
    result.findings += fsdp.pickle_findings(path, scan)
    if scan.unsafe:
        shown = ", ".join(f"{i.dotted} ({i.opcode}{f' in {i.member}' if i.member else ''})" for i in scan.unsafe[:5])
        more = f" and {len(scan.unsafe) - 5} more" if len(scan.unsafe) > 5 else ""
        result.findings.append(
            Finding(
                "LG401",
                path,
                f"imports {shown}{more}: unpickling calls them ({scan.calls} call opcodes), "
                "so loading this file can run code; do not load it. Tensors were not audited.",
            )
        )
    result.findings += [Finding(rule, path, message) for rule, message in scan.problems]
    if scan.unsafe or scan.problems:
        return
    if not scan.pickles:
        result.files.remove(path)
        result.skipped.append((path, scan.nothing_runs or "no pickle in it: no loader runs code from it"))
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
