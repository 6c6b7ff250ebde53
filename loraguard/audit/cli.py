"""`loraguard audit PATH...`: audit adapters, safetensors files, sharded models and pickles without trusting them.

Imports nothing heavy at module top: the main CLI imports every command module to build its parser.
"""

from __future__ import annotations

import argparse
import sys

from loraguard.core.vocabulary import canonical_format, format_option

HELP = "Audit LoRA adapters and checkpoints offline (safetensors headers, keys vs config, ranks, values, pickles)."


def add_report_options(parser: argparse.ArgumentParser) -> None:
    """--format and --fail-on, shared by `audit` and `audit-merge`."""
    format_option(parser, ("text", "json", "junit", "sarif"), default="table")
    parser.add_argument(
        "--fail-on",
        choices=("error", "warning", "info"),
        default="error",
        help="exit 1 if a finding is at or above this severity (default: error)",
    )


def _rule_id(text: str) -> str:
    from loraguard.audit.rules import RULES

    rule = text.strip().upper()
    if rule not in RULES:
        raise argparse.ArgumentTypeError(f"no rule {text!r}; rules are {', '.join(RULES)}")
    return rule


def explain(rule_id: str) -> str:
    """A rule's documentation as shipped in the package: ID, name, severity, summary, detail, where to read more."""
    from loraguard.audit.rules import RULES

    rule = RULES[rule_id]
    unusable = "; the input cannot be audited further (exit 2)" if rule.unusable else ""
    parts = [f"{rule.id} {rule.name} ({rule.severity}{unusable})", rule.summary, rule.detail, f"More: {rule.help_uri}"]
    return "\n\n".join(parts) + "\n"


def report_format(name: str) -> str:
    """The audit report's name for a --format value (the plain-text report is called "table" there)."""
    return "table" if canonical_format(name) == "text" else name


def configure(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(_parser=parser)
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="adapter directory (named adapters in subfolders too), *.safetensors, "
        "*.safetensors.index.json, model directory, or pickle (*.bin)",
    )
    add_report_options(parser)
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load pickle files whose scan finds only tensor imports, with torch.load(weights_only=True), "
        "and audit their tensors; only for files you trust",
    )
    parser.add_argument("--explain", metavar="RULE", type=_rule_id, help="print a rule's documentation (e.g. LG201)")


def run(args: argparse.Namespace) -> int:
    from loraguard.audit.checkpoint import Options, audit_paths
    from loraguard.audit.progress import terminal_progress
    from loraguard.audit.report import exit_code, render

    if args.explain:
        sys.stdout.write(explain(args.explain))
        return 0
    if not args.paths:
        args._parser.error("give at least one PATH to audit (or --explain RULE)")
    fmt = report_format(args.format)
    progress = terminal_progress() if fmt == "table" else None
    result = audit_paths(args.paths, Options(allow_pickle=args.allow_pickle, progress=progress))
    sys.stdout.write(render(result, fmt, args.fail_on))
    return exit_code(result, args.fail_on)
