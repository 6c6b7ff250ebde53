"""Audit cost, measured against baselines taken in the same run.

1. `loraguard audit` of an adapter directory vs a plain `safetensors.torch.load_file` of the same weights
   (target: at most 1.5x).
2. `loraguard audit-merge` of a generated merged model of at least 1 GB, run in a subprocess: its peak RSS
   above a subprocess that imports the same modules and does nothing (target: at most the largest tensor + 64 MB).

Usage: python benchmarks/audit_bench.py [--merge-gb 1.0] [--dir DIR]   (files go to a temporary directory)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loraguard.audit.checkpoint import audit_paths  # noqa: E402
from loraguard.core.config import WEIGHTS_NAME, LoraConfig  # noqa: E402
from loraguard.core.merge_math import merged_weight  # noqa: E402

HIDDEN, LAYERS, RANK = 4096, 32, 32
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def fastest(runs: int, **fns) -> dict[str, float]:
    """Fastest time in seconds of each function over `runs` interleaved rounds (files already in the page cache),
    so a busy machine slows baseline and audit alike."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def make_adapter(directory: Path) -> int:
    """A llama-7B-shaped LoRA (r=32 on q/k/v/o of 32 layers, float32); returns its weight bytes."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for layer in range(LAYERS):
        for target in TARGETS:
            key = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(RANK, HIDDEN, generator=g)
            tensors[f"{key}.lora_B.weight"] = torch.randn(HIDDEN, RANK, generator=g)
    directory.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=list(TARGETS)).save(directory)
    save_file(tensors, str(directory / WEIGHTS_NAME))
    return sum(t.numel() * 4 for t in tensors.values())


def bench_adapter(work: Path) -> None:
    """Baseline: safetensors' `pread` backend, which reads every byte as the audit does (the default mmap
    backend maps pages lazily and reads nothing until a tensor is used; its time is printed for reference)."""
    directory = work / "adapter"
    size = make_adapter(directory)
    weights = str(directory / WEIGHTS_NAME)
    load_file(weights, backend="pread")  # warm the page cache for both
    result = audit_paths([str(directory)])
    assert not result.findings, result.findings
    t = fastest(
        10,
        lazy=lambda: load_file(weights),
        baseline=lambda: load_file(weights, backend="pread"),
        audited=lambda: audit_paths([str(directory)]),
    )
    lazy, baseline, audited = t["lazy"], t["baseline"], t["audited"]
    ratio = audited / baseline
    print(
        f"adapter audit: {size / 2**20:.0f} MiB adapter, safetensors load_file (pread) {baseline * 1e3:.1f} ms, "
        f"loraguard audit {audited * 1e3:.1f} ms, ratio {ratio:.2f}x (target <= 1.5x) "
        f"{'OK' if ratio <= 1.5 else 'OVER'}; lazy mmap load_file {lazy * 1e3:.1f} ms"
    )


def make_merge(work: Path, gigabytes: float) -> tuple[Path, Path, Path, int]:
    """Base, adapter and correctly merged model of square float32 layers totalling at least `gigabytes`."""
    side = 4096
    count = max(1, -(-int(gigabytes * 2**30) // (side * side * 4)))
    g = torch.Generator().manual_seed(1)
    base = {f"layers.{i}.proj.weight": torch.randn(side, side, generator=g) for i in range(count)}
    base["norm.weight"] = torch.ones(side)
    adapter_dir = work / "merge_adapter"
    adapter_dir.mkdir(parents=True, exist_ok=True)
    config = LoraConfig(r=16, lora_alpha=32, target_modules=["proj"])
    config.save(adapter_dir)
    factors = {}
    for i in range(0, count, 2):  # half the layers carry LoRA, the others must come through untouched
        factors[f"base_model.model.layers.{i}.proj.lora_A.weight"] = torch.randn(16, side, generator=g) * 0.01
        factors[f"base_model.model.layers.{i}.proj.lora_B.weight"] = torch.randn(side, 16, generator=g) * 0.01
    save_file(factors, str(adapter_dir / WEIGHTS_NAME))
    save_file(base, str(work / "base.safetensors"))
    for i in range(0, count, 2):
        key = f"layers.{i}.proj.weight"
        a, b = (
            factors[f"base_model.model.{key[:-7]}.lora_A.weight"],
            factors[f"base_model.model.{key[:-7]}.lora_B.weight"],
        )
        base[key] = merged_weight(base[key], a, b, config.scaling_for(key[:-7]), "linear")
    save_file(base, str(work / "merged.safetensors"))
    return work / "base.safetensors", adapter_dir, work / "merged.safetensors", side * side * 4


_HWM = "def _hwm():\n    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:'))\n"
#: The measured child: the real CLI in-process, then its own high-water mark (VmHWM resets at exec, unlike
#: ru_maxrss, which would include the forked parent's memory).
_AUDIT = (
    _HWM
    + "import sys\nfrom loraguard.frontends.cli import main\ncode = main(sys.argv[1:])\n"
    + "print('HWM', _hwm(), file=sys.stderr)\nsys.exit(code)\n"
)
_IDLE = (
    _HWM + "import sys, torch, loraguard.audit.merge, loraguard.frontends.cli\nprint('HWM', _hwm(), file=sys.stderr)\n"
)


def peak_rss_mib(code: str, *args: str) -> tuple[float, int, float]:
    """Run `code` in a fresh interpreter; return its peak resident set (VmHWM) in MiB, exit code and seconds."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    marks = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("HWM ")]
    if not marks:
        raise RuntimeError(f"no memory figure from the child (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        print(proc.stdout)
    return int(marks[0]) / 1024, proc.returncode, seconds


def bench_merge(work: Path, gigabytes: float) -> None:
    base, adapter, merged, largest = make_merge(work, gigabytes)
    size = merged.stat().st_size
    idle_rss, _, _ = peak_rss_mib(_IDLE)
    audit_rss, code, seconds = peak_rss_mib(
        _AUDIT, "audit-merge", "--base", str(base), "--adapter", str(adapter), "--merged", str(merged)
    )
    extra, budget = audit_rss - idle_rss, largest / 2**20 + 64
    print(
        f"audit-merge: {size / 2**30:.2f} GiB merged model (largest tensor {largest / 2**20:.0f} MiB), exit {code}, "
        f"{seconds:.1f} s; peak RSS {audit_rss:.0f} MiB vs {idle_rss:.0f} MiB for importing torch and doing nothing: "
        f"+{extra:.0f} MiB (target <= {budget:.0f} MiB) {'OK' if extra <= budget and code == 0 else 'OVER'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merge-gb", type=float, default=1.0, help="size of the generated merged model (default 1.0)")
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed afterwards)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        bench_adapter(Path(work))
        bench_merge(Path(work), args.merge_gb)


if __name__ == "__main__":
    main()
