"""Write docs/libraries.md: every shipped backend x every scenario invariant, run on the same zoo, with the date,
the versions and the bugs found. Usage: python benchmarks/libraries_table.py [--zoo NAME ...] [--out PATH]."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import torch

from loraguard.backends import BUILTIN, BackendError, load_backend
from loraguard.harness.known_failures import builtin_files, read_known_failures
from loraguard.harness.zoo import available
from loraguard.harness.zoo_scenarios import profile_scenarios
from loraguard.run.in_process import run_all

ROOT = Path(__file__).resolve().parents[1]
BUGS = {  # library -> lines for the bugs section (each reproducer is under reproducers/<library>/)
    "torchtune": [
        "DoRALinear.forward scales the base bias by the magnitude; get_merged_lora_ckpt does not, so a trained DoRA "
        "model with biases changes its outputs when merged (`dora-bias-merge.py`; merge-forward, mixed-export)",
        "`get_merged_lora_ckpt` / `get_adapter_state_dict` pick LoRA keys by substring: a plain layer named like "
        "`lora` or `flora_head` raises KeyError on merge and its base weights leak into the adapter checkpoint "
        "(`lora-substring-names.py`; drawn scenarios)",
    ],
    "adapters": [
        "`merge_adapter` with `use_dora=True` writes m/||W+BA||*(W+BA): the delta lacks alpha/r, and the forward "
        "scales the bias by the magnitude (`dora-merge.py`; merge-forward, merge-unmerge, mixed-export on bert-dora)",
        "`train_adapter` freezes only `base_model`: a static head (BertForMaskedLM's `cls.*`) stays trainable "
        "(`train-adapter-head.py`; continue-training)",
        "a LoRA added to a bfloat16 model is created in float32 and the forward fails (`lora-dtype-default.py`; "
        "found while writing the backend, which now passes `LoRAConfig(dtype=...)`)",
    ],
}


def cell(counts: Counter, reasons: list[str]) -> str:
    """pass / fail (known bug) / skip with the first reason, for one library x invariant."""
    parts = [f"{counts[k]} {k}" for k in ("passed", "known bug", "FAILED", "skipped") if counts.get(k)]
    text = ", ".join(parts) or "-"
    if reasons and not counts.get("passed"):
        text += f" ({reasons[0][:70]})"
    return text.replace("|", "/")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", nargs="+", default=["mlp", "bert"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "libraries.md")
    args = parser.parse_args(argv)
    scenarios = profile_scenarios(available(args.zoo), [torch.float32])
    table: dict[str, dict[str, tuple[Counter, list[str]]]] = {}
    versions = {}
    for name in BUILTIN:
        try:
            backend = load_backend(name)
        except BackendError as err:
            print(f"skipping {name}: {err}", file=sys.stderr)
            continue
        versions[name] = backend.version()
        known = [k for f in builtin_files([name]) for k in read_known_failures(f, {name: versions[name]})]
        for o in run_all(backend, scenarios):
            counts, reasons = table.setdefault(o.invariant, {}).setdefault(name, (Counter(), []))
            listed = any(k.matches(f"{o.invariant}[{name}-{o.scenario}]") for k in known)
            status = {"failed": "FAILED", "error": "FAILED", "partial": "passed"}.get(o.status, o.status)
            counts["known bug" if status == "FAILED" and listed else status] += 1
            if status == "skipped" and o.message not in reasons:
                reasons.append(o.message)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    libs = list(versions)
    lines = [
        "# Libraries: what loraguard finds in each PEFT-style library",
        "",
        f"Made by `python benchmarks/libraries_table.py` on {date} (torch {torch.__version__}, CPU, float32, zoo "
        f"{', '.join(args.zoo)} with their DoRA and tuner variants): "
        + ", ".join(f"{n} {v}" for n, v in versions.items())
        + ". Each cell counts scenarios; `known bug` is a failure listed in `loraguard/known_failures/<library>.txt`"
        " (a real bug of the library, below), `FAILED` one that is not; a skip gives its first reason.",
        "",
        "| invariant | " + " | ".join(libs) + " |",
        "|---|" + "---|" * len(libs),
    ]
    for inv in sorted(table):
        lines.append(f"| {inv} | " + " | ".join(cell(*table[inv].get(n, (Counter(), []))) for n in libs) + " |")
    lines += ["", "## Bugs found", ""]
    for lib, bugs in BUGS.items():
        lines += [f"- **{lib}** (reproducers under `reproducers/{lib}/`, torch and {lib} only):"]
        lines += [f"  - {b}" for b in bugs]
    lines += [
        "",
        'peft\'s bugs are in the README ("What it finds in peft") and `loraguard/known_failures/peft.txt`; '
        "loralib's differences are design (no adapter names, merge on `eval()`), skipped with reasons.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
