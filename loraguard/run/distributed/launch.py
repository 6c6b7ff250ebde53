"""Start N ranks on this host, run named scenarios in each, and report per scenario with every rank's traceback.

Ranks meet through a FileStore in a temporary directory (nothing listens on the network), use gloo on CPU
and NCCL with one GPU per rank on CUDA. A watchdog ends the run when no rank has made progress for `timeout`
seconds, names the ranks that did not arrive where the others wait, and kills every rank's process group,
so nothing outlives the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loraguard.harness.distributed.world import rank_environment
from loraguard.run.distributed.worker import decision_file
from loraguard.run.outcome import Outcome, RankReport

_POLL_S = 0.05
_STACK_WAIT_S = 1.0
_LOG_TAIL = 4000


def launch(
    scenarios: list[str],
    world_size: int,
    timeout: float = 60.0,
    device: str = "cpu",
    options: dict[str, Any] | None = None,
    start_timeout: float | None = None,
) -> list[Outcome]:
    """Run `scenarios` in order on `world_size` fresh ranks; after a hang or a crash, a fresh world runs the rest.

    `device`: "cpu" (gloo), "cuda" (NCCL, rank r on cuda:r) or "auto" (CUDA when there is a GPU per rank).
    `start_timeout`: seconds without progress allowed while the ranks start (import torch, join the group), until
    every rank has made its first step; `timeout` applies from then on. Default: `timeout` throughout.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    outcomes: list[Outcome] = []
    remaining = list(scenarios)
    while remaining:
        done = _run_world(remaining, world_size, timeout, start_timeout or timeout, device, options or {})
        outcomes.extend(done)
        remaining = remaining[len(done) :]
    return outcomes


class _World:
    """The rank processes of one run and the files they write."""

    def __init__(self, jobdir: Path, world_size: int, device: str, timeout: float):
        self.jobdir, self.world_size = jobdir, world_size
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self.procs: list[subprocess.Popen] = []
        for rank in range(world_size):
            log = open(jobdir / f"rank{rank}.log", "wb")  # noqa: SIM115 - closed in kill()
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "loraguard.run.distributed.worker", str(jobdir)],
                    env={**env, **rank_environment(rank, world_size, device, timeout)},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
            log.close()

    def progress(self) -> dict[int, tuple[int, str]]:
        """Each rank's last progress mark (sequence number, label); ranks yet to write one are absent."""
        marks = {}
        for rank in range(self.world_size):
            try:
                seq, _, label = (self.jobdir / f"rank{rank}.progress").read_text().partition("\t")
                marks[rank] = (int(seq), label)
            except (FileNotFoundError, ValueError):
                continue
        return marks

    def running(self) -> list[int]:
        return [r for r, p in enumerate(self.procs) if p.poll() is None]

    def dump_stacks(self, ranks: list[int]) -> None:
        """Ask hung ranks to write every thread's stack (faulthandler on SIGUSR1)."""
        for rank in ranks:
            try:
                os.kill(self.procs[rank].pid, signal.SIGUSR1)
            except ProcessLookupError:
                continue
        time.sleep(_STACK_WAIT_S)

    def kill(self) -> None:
        """SIGKILL every rank's whole process group (children included) and reap the ranks."""
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in self.procs:
            proc.wait()

    def results(self) -> dict[int, list[dict[str, Any]]]:
        out = {}
        for rank in range(self.world_size):
            path = self.jobdir / f"rank{rank}.results"
            out[rank] = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return out

    def tail(self, rank: int, name: str) -> str:
        path = self.jobdir / f"rank{rank}.{name}"
        return path.read_text(errors="replace")[-_LOG_TAIL:] if path.exists() else ""


def _run_world(
    scenarios: list[str], world_size: int, timeout: float, start_timeout: float, device: str, options: dict[str, Any]
) -> list[Outcome]:
    """One world: run until every rank exits or progress stops; return outcomes of the scenarios that ended."""
    with tempfile.TemporaryDirectory(prefix="loraguard-ranks-") as tmp:
        jobdir = Path(tmp)
        (jobdir / "shared").mkdir()
        (jobdir / "job.json").write_text(
            # the ranks' collectives (the rendezvous too) time out after the watchdog's longer limit
            json.dumps(
                {"scenarios": scenarios, "options": options, "timeout": max(timeout, start_timeout), "device": device}
            )
        )
        start = time.perf_counter()
        world = _World(jobdir, world_size, device, timeout)
        try:
            hang = _watch(world, timeout, start_timeout)
        finally:
            world.kill()
        return _outcomes(world, scenarios, hang, time.perf_counter() - start)


def _watch(world: _World, timeout: float, start_timeout: float) -> str:
    """Wait for every rank to exit; if no rank makes progress for `timeout` s (`start_timeout` s until every rank
    has made a step after "started"), return the hang report."""
    last_marks, last_change = world.progress(), time.monotonic()
    while world.running():
        time.sleep(_POLL_S)
        marks = world.progress()
        started = len(marks) == world.world_size and all(seq > 0 for seq, _ in marks.values())
        limit = timeout if started else start_timeout
        if marks != last_marks:
            last_marks, last_change = marks, time.monotonic()
        elif time.monotonic() - last_change > limit:
            hung = world.running()
            world.dump_stacks(hung)
            return _hang_report(marks, hung, world, limit)
    return ""


def _hang_report(marks: dict[int, tuple[int, str]], hung: list[int], world: _World, timeout: float) -> str:
    """Which ranks did not arrive where the others wait, with each hung rank's stack."""
    furthest = max(marks.values(), default=(0, "start-up"))
    reached = sorted(r for r, m in marks.items() if m == furthest)
    behind = sorted(r for r in hung if marks.get(r, (-1, ""))[0] < furthest[0])
    if behind:
        head = (
            f"timed out after {timeout:g} s without progress: rank(s) {behind} did not arrive at "
            f"'{furthest[1]}', reached by rank(s) {reached}"
        )
    else:
        head = (
            f"timed out after {timeout:g} s without progress: rank(s) {reached} reached "
            f"'{furthest[1]}' and none got further (a collective that never completed)"
        )
    lines = [head]
    for rank in hung:
        mark = marks.get(rank, (-1, "nothing"))[1]
        lines.append(f"--- rank {rank} (last step: '{mark}') stack:\n{world.tail(rank, 'stack').strip()}")
    return "\n".join(lines)


def _outcomes(world: _World, scenarios: list[str], hang: str, elapsed: float) -> list[Outcome]:
    """Scenarios every rank reported, in order, until one some rank did not report (hung or died) or the ranks
    left after a failure (the rest runs in a fresh world)."""
    results = world.results()
    pids = [p.pid for p in world.procs]
    outcomes = []
    for index, name in enumerate(scenarios):
        reports = {r: rs[index] for r, rs in results.items() if len(rs) > index}
        if len(reports) == world.world_size:
            outcomes.append(combine(name, reports, pids))
            if any(
                decision_file(world.jobdir, r, index).exists()
                and decision_file(world.jobdir, r, index).read_text() == "leave"
                for r in range(world.world_size)
            ):
                break
            continue
        outcomes.append(_unfinished(name, reports, world, hang, pids, elapsed - sum(o.duration for o in outcomes)))
        break
    return outcomes


def combine(name: str, reports: dict[int, dict[str, Any]], pids: list[int]) -> Outcome:
    """One scenario's outcome from every rank's report (as written by `rank.run_scenario`)."""
    ranks = [RankReport(r, d["status"], d["message"], d["traceback"]) for r, d in sorted(reports.items())]
    status = _worst(d["status"] for d in reports.values())
    duration = max(d["duration"] for d in reports.values())
    if status == "passed":
        message = ""
    elif status == "skipped":
        message = ranks[0].message
    else:
        message = "\n".join(_describe(rr) for rr in ranks)
    return Outcome(name, "", status, message, duration, ranks=tuple(ranks), pids=tuple(pids))


def _unfinished(
    name: str, reports: dict[int, dict[str, Any]], world: _World, hang: str, pids: list[int], duration: float
) -> Outcome:
    """A scenario some rank never reported: hung (watchdog report) or died (exit code and log tail)."""
    ranks = [RankReport(r, d["status"], d["message"], d["traceback"]) for r, d in sorted(reports.items())]
    lines = [hang] if hang else []
    for rank, proc in enumerate(world.procs):
        if rank in reports:
            lines.append(_describe(ranks[[rr.rank for rr in ranks].index(rank)]))
        elif not hang:
            lines.append(
                f"--- rank {rank}: exited with code {proc.returncode} without reporting; its output:\n"
                f"{world.tail(rank, 'log').strip()}"
            )
    return Outcome(name, "", "error", "\n".join(lines), duration, ranks=tuple(ranks), pids=tuple(pids))


def _describe(report: RankReport) -> str:
    if report.status == "passed":
        return f"--- rank {report.rank}: passed"
    return f"--- rank {report.rank}: {report.status}: {report.message}\n{report.traceback.strip()}"


def _worst(statuses: Iterable[str]) -> str:
    order = {"error": 3, "failed": 2, "passed": 1, "skipped": 0}
    return max(statuses, key=order.__getitem__)
