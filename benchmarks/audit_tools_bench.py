"""`loraguard audit` against picklescan, modelscan and fickling on the adversarial corpus of tests/audit/hostile.py.

Each tool is called as its command line calls it, on each case (a checkpoint directory or file): picklescan's
`scan_directory_path`/`scan_file_path` (exit 2 on a scan error, 1 on issues), modelscan's `ModelScan.scan`
(3 nothing scanned, 2 errors, 1 issues), fickling's `scan_file` on every file under the path (fickling does not
walk directories), loraguard's `audit_paths` (LG401 is "flagged", any other exit 2 an error). Every call runs in
a forked process with a time limit and a memory limit, so a tool that blocks on a FIFO or reads /dev/zero is
counted as hung, not waited for. A case is *caught* when the tool does not pass it as clean (a finding or a scan
error); benign torch.save files count false alarms. The scanners are not dependencies of loraguard: install them
to run this (``pip install picklescan modelscan fickling``). Prints a markdown table per attack class, then the date.

    python benchmarks/audit_tools_bench.py [--timeout 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.audit import hostile  # noqa: E402

#: Classes where only loraguard has a check to make (adapter configs, safetensors headers, report escaping).
LORAGUARD_ONLY = {"huge integers", "config regexes", "names escaped in output"}
#: Address space a tool may add before it counts as crashed (reading /dev/zero without end, a bomb).
MEMORY_HEADROOM = 4 << 30


def loraguard(path: str) -> str:
    from loraguard.audit.checkpoint import Options, audit_paths
    from loraguard.audit.report import exit_code

    result = audit_paths([path], Options())
    code = exit_code(result, "error")
    if code == 2 and not any(f.rule == "LG401" for f in result.findings):
        return "error"
    return "flagged" if code else "clean"


def picklescan(path: str) -> str:
    from picklescan.scanner import scan_directory_path, scan_file_path

    result = scan_directory_path(path) if os.path.isdir(path) else scan_file_path(path)
    return "error" if result.scan_err else "flagged" if result.issues_count else "clean"


def modelscan(path: str) -> str:
    from modelscan.modelscan import ModelScan
    from modelscan.settings import DEFAULT_SETTINGS

    scan = ModelScan(settings=DEFAULT_SETTINGS)
    scan.scan(path)
    if not scan.scanned:
        return "unsupported"
    return "error" if scan.errors else "flagged" if scan.issues.all_issues else "clean"


def fickling(path: str) -> str:
    import fickling as fk

    files = [path] if not os.path.isdir(path) else [os.path.join(d, n) for d, _, ns in os.walk(path) for n in ns]
    results = [fk.scan_file(f, graceful=True) for f in files]
    if any(not r.is_safe for r in results):
        return "flagged"
    return "error" if any(r.errors for r in results) else "clean"


TOOLS: dict[str, Callable[[str], str]] = {
    "loraguard": loraguard,
    "picklescan": picklescan,
    "modelscan": modelscan,
    "fickling": fickling,
}


def run(tool: str, path: Path, timeout: float) -> str:
    """The tool's outcome on `path` in a forked child: clean, flagged, error, unsupported, hung or crash."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: bounded memory, outcome down the pipe, never returns
        os.close(read)
        code = 0
        try:
            limit = _address_space() + MEMORY_HEADROOM
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            with open(os.devnull, "w") as quiet:
                os.dup2(quiet.fileno(), 1)
                os.dup2(quiet.fileno(), 2)
            outcome = TOOLS[tool](str(path))
        except BaseException:  # a tool that raises has crashed on this input
            outcome = "crash"
            code = 1
        os.write(write, outcome.encode())
        os._exit(code)
    os.close(write)
    deadline = time.monotonic() + timeout
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read)
            return "hung"
        time.sleep(0.02)
    with os.fdopen(read, "rb") as pipe:
        return pipe.read().decode() or "crash"


def _address_space() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def cell(outcomes: list[str], benign: bool) -> str:
    """'caught/total' (or 'clean/total' for benign files), then what was not a plain flag."""
    total = len(outcomes)
    if benign:
        head = f"{outcomes.count('clean')}/{total} clean"
    else:
        head = f"{sum(o in ('flagged', 'error') for o in outcomes)}/{total}"
    kinds = ("error", "clean", "unsupported", "hung", "crash")
    if benign:
        kinds = ("flagged", "error", "unsupported", "hung", "crash")
    notes = [f"{outcomes.count(k)} {'missed' if k == 'clean' else k}" for k in kinds if outcomes.count(k)]
    return head + (f" ({', '.join(notes)})" if notes else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per tool and case (a hang past it)")
    parser.add_argument("--json", type=Path, help="write every outcome here")
    args = parser.parse_args()
    tools = [t for t in TOOLS if _has(t)]
    for tool in tools:  # import each once here, so every forked run starts warm
        try:
            TOOLS[tool](str(ROOT / "README.md"))
        except Exception:  # noqa: S110 - warming up only; real runs report their own failures
            pass
    with tempfile.TemporaryDirectory(prefix="loraguard-hostile-") as tmp:
        cases = hostile.build(Path(tmp) / "corpus")
        if hasattr(os, "mkfifo"):
            cases += hostile.build_special(Path(tmp) / "special")
        benign_paths = hostile.benign(Path(tmp) / "benign")
        rows: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        record = []
        for case in cases:
            for tool in tools:
                if tool != "loraguard" and case.klass in LORAGUARD_ONLY:
                    continue
                result = run(tool, case.path, args.timeout)
                rows[case.klass][tool].append(result)
                record.append({"case": case.name, "class": case.klass, "tool": tool, "outcome": result})
                print(f"{case.name:45s} {tool:10s} {result}", file=sys.stderr)
        for path in benign_paths:
            for tool in tools:
                result = run(tool, path, args.timeout)
                rows["benign torch.save files (false alarms)"][tool].append(result)
                record.append({"case": path.name, "class": "benign", "tool": tool, "outcome": result})
        sentinels = sorted(p.name for p in (Path(tmp) / "corpus" / "sentinels").iterdir())
    print("| Class | " + " | ".join(tools) + " |")
    print("| --- |" + " --- |" * len(tools))
    for klass, by_tool in rows.items():
        benign = klass.startswith("benign")
        cells = [cell(by_tool[t], benign) if by_tool.get(t) else "n/a" for t in tools]
        print(f"| {klass} | " + " | ".join(cells) + " |")
    versions = ", ".join(f"{t} {_version(t)}" for t in tools)
    print(f"\nMeasured {datetime.date.today().isoformat()} with {versions}; timeout {args.timeout:g} s per run.")
    if sentinels:
        print(f"payloads that ran during the scans (a tool executed them): {sentinels}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _version(tool: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(tool)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    main()
