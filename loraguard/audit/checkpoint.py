"""What a path holds (adapter directory, named-adapter subfolders, safetensors file, shard index, pickle) and
auditing each: every problem becomes a Finding, never an exception, so one broken file never stops the others.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

from loraguard.audit import discover, fsdp
from loraguard.audit.discover import INDEX_SUFFIX, Entry
from loraguard.audit.file_reads import header_of, index_headers, read_json_object
from loraguard.audit.result import AuditResult, Options
from loraguard.audit.rules import Finding
from loraguard.audit.safe_io import Unusable
from loraguard.audit.tensor_audit import audit_pickle, audit_source
from loraguard.audit.tensors import TensorSource
from loraguard.core.config import CONFIG_NAME, LEGACY_WEIGHTS_NAME, WEIGHTS_NAME, ConfigError, LoraConfig

__all__ = ["INDEX_SUFFIX", "AuditResult", "Options", "Unusable", "audit_paths", "header_of", "index_headers"]

_DEFAULT_OPTIONS = Options()


def audit_paths(paths: list[str], options: Options = _DEFAULT_OPTIONS) -> AuditResult:
    """Audit every path; problems with one path are findings on it, and the others are still audited."""
    result = AuditResult()
    for path in paths:
        try:
            _audit_path(path, options, result)
        except Unusable as err:
            result.findings.append(err.finding)
    return result


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
        audit_source(TensorSource.from_headers([header_of(entry.path, result)]), None, options, result, entry.path)
    elif entry.kind == discover.INDEX:
        _audit_index(entry.path, options, result)
    elif entry.kind == discover.CONFIG:
        folder = os.path.dirname(entry.path) or "."
        _audit_adapter(folder, _adapter_weights(folder), options, result)
    else:
        audit_pickle(entry.path, None, options, result)


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
        audit_source(TensorSource.from_headers([header_of(path, result)]), config, options, result, path, True)
    else:
        audit_pickle(path, config, options, result, True)


def _audit_index(index_path: str, options: Options, result: AuditResult) -> set[str]:
    """Audit a sharded model as one checkpoint; the shard names it covers."""
    headers = index_headers(index_path, result)
    audit_source(TensorSource.from_headers(headers), None, options, result, index_path)
    return {os.path.basename(h.file) for h in headers}
