"""The words every loraguard command accepts for dtypes and report formats, defined once so they cannot drift.

Commands use these in argparse ``choices`` (through `dtype_option` and `format_option`); the plugin, snapshot,
compare, matrix, demo and audit then spell dtypes and formats the same way. Imports nothing heavy.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

#: dtype names, short form first: the form the plugin's --loraguard-dtype, snapshot ids and reports use.
DTYPE_NAMES: dict[str, str] = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64"}
_DTYPE_ALIASES = {long: short for short, long in DTYPE_NAMES.items()}

#: the PyTorch FSDP APIs loraguard drives (``fully_shard``; ``FullyShardedDataParallel(use_orig_params=True)``), by the
#: name `run_suite(api=...)` and --loraguard-fsdp-api take
FSDP_APIS = ("fsdp2", "fsdp1")

#: report formats and what each is for; ``table`` is another name for ``text`` (audit has always called it so).
FORMATS: dict[str, str] = {
    "text": "a plain-text table for a terminal or a log",
    "table": "the same as text",
    "markdown": "a Markdown table, e.g. for $GITHUB_STEP_SUMMARY or a pull-request comment",
    "json": "machine-readable, stable keys",
    "junit": "JUnit XML, for CI test reports",
    "sarif": "SARIF 2.1.0, for code-scanning upload",
}
_FORMAT_ALIASES = {"table": "text"}


def canonical_dtype(name: str) -> str:
    """``float32`` -> ``f32``; short names pass through; anything else is returned unchanged (argparse rejects it)."""
    return _DTYPE_ALIASES.get(name, name)


def long_dtype(name: str) -> str:
    """``f32`` -> ``float32`` (torch's attribute name)."""
    return DTYPE_NAMES[canonical_dtype(name)]


def canonical_format(name: str) -> str:
    """``table`` -> ``text``; the other format names are already canonical."""
    return _FORMAT_ALIASES.get(name, name)


def dtype_option(parser: argparse.ArgumentParser, default_help: str) -> None:
    """``--dtype NAME`` (repeatable), with the short names as choices; the long names are accepted too."""
    parser.add_argument(
        "--dtype",
        action="append",
        default=[],
        type=canonical_dtype,
        choices=list(DTYPE_NAMES),
        metavar="{" + ",".join(DTYPE_NAMES) + "}",
        help=f"dtype to use (repeatable; float32, bfloat16... are accepted too; default: {default_help})",
    )


def format_option(parser: argparse.ArgumentParser, supported: Iterable[str], default: str = "text") -> None:
    """``--format NAME``, with choices the subset of FORMATS a command writes (``text`` and ``table`` together)."""
    wanted = set(supported)
    choices = [f for f in FORMATS if canonical_format(f) in wanted]
    parser.add_argument(
        "--format",
        choices=choices,
        default=default,
        type=str,
        help=f"report format (default: {default}): " + "; ".join(f"{f}: {FORMATS[f]}" for f in choices),
    )
