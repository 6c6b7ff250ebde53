"""Auditing one checkpoint's tensors: from safetensors, or from a pickle scanned first and loaded only if trusted."""

from __future__ import annotations

from loraguard.audit import fsdp
from loraguard.audit.adapter import audit_tensors, ref_file
from loraguard.audit.pickle_files import scan_file
from loraguard.audit.result import AuditResult, Options
from loraguard.audit.rules import Finding
from loraguard.audit.safe_io import Unusable, regular_size
from loraguard.audit.tensors import TensorSource
from loraguard.core.config import LoraConfig
from loraguard.core.keys import parse_factor_key
from loraguard.core.matching import PatternError


def audit_source(
    source: TensorSource,
    config: LoraConfig | None,
    options: Options,
    result: AuditResult,
    label: str,
    is_adapter: bool = False,
) -> None:
    """Every tensor rule on `source` (an adapter's when `is_adapter` or when it holds a factor key), into `result`."""
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


def audit_pickle(
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
    audit_source(_load_trusted(path), config, options, result, path, is_adapter)


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
