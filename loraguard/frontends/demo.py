"""`loraguard demo`: run loraguard's checks on the built-in tiny models against the installed peft, as a report.

The report is a list of sections; each renders its own text and says whether it passed. A later check adds
one `Section` to `SECTIONS`. Exit code 1 if any section failed, 2 if peft is not installed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loraguard.core.vocabulary import canonical_dtype, dtype_option, long_dtype

if TYPE_CHECKING:
    from pathlib import Path

HELP = "Run loraguard on its built-in tiny models against the installed peft and print a readable report."


@dataclass(frozen=True)
class SectionResult:
    """What a section prints, and whether it found a problem that is not a documented upstream bug."""

    text: str
    ok: bool


@dataclass(frozen=True)
class Section:
    title: str
    run: Callable[[argparse.Namespace], SectionResult]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--zoo", action="append", default=[], metavar="NAME", help="built-in model to use (repeatable; default: all)"
    )
    dtype_option(parser, "f32 and bf16")


def agreement_section(args: argparse.Namespace) -> SectionResult:
    """The reference-vs-peft agreement table, with every problem spelled out below it."""
    import peft

    from loraguard.core.progress import steps
    from loraguard.frontends.agreement import VARIANTS, agreement_rows
    from loraguard.harness.zoo import available

    dtypes = [long_dtype(d) for d in args.dtype or ("f32", "bf16")]
    models = [m.name for m in available(args.zoo or None)]
    with steps("agreement", len(models) * len(dtypes) * len(VARIANTS)) as step:
        rows = agreement_rows(models, dtypes, progress=step)
    lines = [
        f"peft {peft.__version__}; differences are max |peft - reference| over the outputs; a difference passes "
        "when <= bound",
        "(the tolerance table's bound for the dtype); "
        "effect = smallest change the adapter makes, must be >= 10x bound.",
        "",
        format_table(rows),
    ]
    lines += format_problems(rows)
    bad = [r for r in rows if not r.agrees and not r.explained]
    explained = [r for r in rows if r.explained]
    summary = f"{len(rows) - len(bad) - len(explained)} of {len(rows)} rows agree"
    if explained:
        summary += f"; {len(explained)} differ only by documented peft bugs"
    if bad:
        summary += f"; {len(bad)} DISAGREE"
    lines += ["", summary]
    return SectionResult("\n".join(lines), ok=not bad)


def format_table(rows: list) -> str:
    """Fixed-width text table of agreement rows."""
    header = (
        "model",
        "dtype",
        "config",
        "effect",
        "bound",
        "unmerged",
        "disabled",
        "merged",
        "saved keys",
        "saved file",
        "peft<-ref",
        "ref<-peft",
        "verdict",
    )
    body = [
        (
            r.model,
            r.dtype,
            r.variant,
            _num(r.effect),
            _num(r.bound),
            _num(r.unmerged),
            _num(r.disabled),
            _num(r.merged),
            "same" if r.keys_equal else "DIFFER",
            r.weights_file,
            _yes(r.peft_loads_reference),
            _yes(r.reference_loads_peft),
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*b) for b in body]
    return "\n".join(line.rstrip() for line in lines)


def format_problems(rows: list) -> list[str]:
    """Each model's problems once, with the dtype/config rows that show it, then the peft bugs they cite."""
    from loraguard.frontends.agreement import KNOWN_PEFT_BUGS

    by_model: dict[str, dict[str, list[str]]] = {}
    for r in rows:
        for p in r.problems:
            text = p.text + (f"  [{p.cause}]" if p.cause else "")
            by_model.setdefault(r.model, {}).setdefault(text, []).append(f"{r.dtype}/{r.variant}")
    if not by_model:
        return []
    lines = ["", "Problems:"]
    for model, problems in by_model.items():
        by_rows: dict[tuple[str, ...], list[str]] = {}
        for text, shown_in in problems.items():
            by_rows.setdefault(tuple(shown_in), []).append(text)
        for where, texts in by_rows.items():
            lines.append(f"  {model} ({', '.join(where)}):")
            lines += [f"    - {t}" for t in texts]
    cited = sorted({p.cause for r in rows for p in r.problems if p.cause})
    if cited:
        lines += ["", "Known peft bugs cited above:"] + [f"  {c}: {KNOWN_PEFT_BUGS[c]}" for c in cited]
    return lines


def suite_section(args: argparse.Namespace) -> SectionResult:
    """`pytest --loraguard` on the zoo against the reference and peft, peft's known bugs (shipped) as xfails.

    ``--zoo`` and ``--dtype`` narrow this section as they narrow the others.
    """
    import subprocess
    import tempfile
    from pathlib import Path

    from loraguard.core.progress import steps

    known = Path(__file__).parents[1] / "known_failures" / "peft.txt"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "--loraguard",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        "2",
        "-W",
        "ignore",
        *(f"--loraguard-zoo={name}" for name in args.zoo),
        *(f"--loraguard-dtype={canonical_dtype(dtype)}" for dtype in args.dtype or ()),
    ]
    with tempfile.TemporaryDirectory(prefix="loraguard-demo-") as cwd, steps("pytest --loraguard", 1) as step:
        step("in a subprocess, two workers")
        done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = done.stdout.splitlines()
    start = next((i for i, line in enumerate(out) if "loraguard summary" in line), None)
    table = out[start:] if start is not None else out[-40:]
    text = ["$ pytest --loraguard  (in an empty directory)", "", *table]
    if done.returncode == 0:
        text += ["", f"xfailed = peft bugs listed in {known}; each stays a strict xfail until peft fixes it."]
    return SectionResult("\n".join(text), ok=done.returncode == 0)


def audit_section(args: argparse.Namespace) -> SectionResult:
    """Audit a good reference adapter and a damaged copy of it, offline."""
    import tempfile
    from pathlib import Path

    from loraguard.audit.checkpoint import Options, audit_paths
    from loraguard.audit.report import render

    with tempfile.TemporaryDirectory(prefix="loraguard-demo-") as tmp:
        good = _save_good_adapter(Path(tmp) / "good")
        bad = _damaged_copy(good, Path(tmp) / "damaged")
        result = audit_paths([str(good), str(bad)], Options())
        report = render(result, "table", "error").replace(tmp + "/", "")
    found_bad = any("damaged" in f.file for f in result.findings)
    clean_good = not any("good" in f.file and f.severity == "error" for f in result.findings)
    lines = [
        "$ loraguard audit good damaged",
        "",
        report.rstrip(),
        "",
        "damaged = the good adapter with lora_B zeroed on one layer and the adapter name left in its keys.",
    ]
    return SectionResult("\n".join(lines), ok=found_bad and clean_good)


def _save_good_adapter(directory: Path) -> Path:
    """A reference adapter with a real effect, saved in peft's format."""
    from loraguard.core.config import LoraConfig
    from loraguard.harness.zoo import ZOO
    from loraguard.reference import LoraModel

    zm = ZOO["mlp"]
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=zm.target_modules, modules_to_save=zm.modules_to_save, init_lora_weights=False
    )
    LoraModel(zm.make(0), cfg).save_pretrained(directory)
    return directory


def _damaged_copy(good: Path, directory: Path) -> Path:
    """The two classic damages: a layer whose lora_B is all zeros, and an adapter name left in a key."""
    import shutil

    from safetensors.torch import load_file, save_file

    from loraguard.core.config import WEIGHTS_NAME

    shutil.copytree(good, directory)
    tensors = load_file(str(directory / WEIGHTS_NAME))
    tensors["base_model.model.fc2.lora_B.weight"].zero_()
    renamed = {k.replace("fc1.lora_A.weight", "fc1.lora_A.default.weight"): v for k, v in tensors.items()}
    save_file(renamed, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


SECTIONS: list[Section] = [
    Section("Reference LoRA vs peft: same weights, same outputs, same files", agreement_section),
    Section("pytest --loraguard: the invariants against the reference and peft", suite_section),
    Section("loraguard audit: a good adapter and a damaged copy, checked offline", audit_section),
]


def run(args: argparse.Namespace) -> int:
    missing = [m for m in ("torch", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"loraguard demo needs {', '.join(missing)}: run `make demo`, which installs them into .venv",
            file=sys.stderr,
        )
        return 2
    import warnings

    failed = []
    for section in SECTIONS:
        print(f"== {section.title} ==\n")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # library API deprecations, not findings
            result = section.run(args)
        print(result.text + "\n")
        if not result.ok:
            failed.append(section.title)
    print("demo: FAILED in: " + "; ".join(failed) if failed else "demo: all sections passed")
    return 1 if failed else 0


def _num(x: float) -> str:
    return "0" if x == 0 else f"{x:.2e}"


def _yes(ok: bool) -> str:
    return "ok" if ok else "FAIL"
