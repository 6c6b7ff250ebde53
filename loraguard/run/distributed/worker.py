"""The process the launcher starts for each rank: ``python -m loraguard.run.distributed.worker JOBDIR``.

It joins the file rendezvous in JOBDIR, runs the job's scenarios in order and appends one JSON line per
scenario to ``rank<N>.results``. After each scenario the ranks agree, through files, whether the world goes on:
a rank that failed stays only if every peer also finished the scenario (a failure all saw alike); otherwise it
leaves at once, so peers blocked on it in a collective fail fast instead of hanging, everyone follows, and
the launcher starts a fresh world for the remaining scenarios.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loraguard.harness.distributed.context import Progress

_COLLECTIVE_SLACK_S = 10.0
_PEER_WAIT_S = 5.0
_POLL_S = 0.05


def progress_writer(jobdir: Path, rank: int) -> Progress:
    """A progress callback that replaces ``rank<N>.progress`` atomically with "<seq>\\t<label>"."""
    path, tmp = jobdir / f"rank{rank}.progress", jobdir / f"rank{rank}.progress.tmp"

    def mark(seq: int, label: str) -> None:
        tmp.write_text(f"{seq}\t{label}")
        os.replace(tmp, path)

    return mark


def settle(jobdir: Path, world_size: int, rank: int, index: int, failed: bool) -> bool:
    """Whether this world goes on after scenario `index`: no rank leaves. A hung rank is the watchdog's job."""
    stay = not failed or _all_reported(jobdir, world_size, index, _PEER_WAIT_S)
    tmp = decision_file(jobdir, rank, index).with_suffix(".tmp")
    tmp.write_text("stay" if stay else "leave")
    os.replace(tmp, decision_file(jobdir, rank, index))
    while stay:
        decisions = [
            p.read_text() if p.exists() else "" for p in (decision_file(jobdir, r, index) for r in range(world_size))
        ]
        if "leave" in decisions:
            return False
        if all(decisions):
            return True
        time.sleep(_POLL_S)
    return False


def decision_file(jobdir: Path, rank: int, index: int) -> Path:
    """Where rank `rank` writes "stay" or "leave" after scenario `index`."""
    return jobdir / f"rank{rank}.after{index}"


def _all_reported(jobdir: Path, world_size: int, index: int, wait: float) -> bool:
    """True once every rank has reported scenario `index` (so none is blocked inside it), within `wait` s."""
    deadline = time.monotonic() + wait
    while True:
        paths = [jobdir / f"rank{r}.results" for r in range(world_size)]
        if all(p.exists() and p.read_text().count("\n") > index for p in paths):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL_S)


def main(argv: list[str]) -> int:
    jobdir = Path(argv[0])
    job = json.loads((jobdir / "job.json").read_text())
    rank = int(os.environ["RANK"])
    stacks = open(jobdir / f"rank{rank}.stack", "w")  # noqa: SIM115 - must outlive main for faulthandler
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    mark = progress_writer(jobdir, rank)
    mark(0, "started")

    from loraguard.core.heap import freeze_heap, importing

    with importing():  # torch and torch.distributed
        from loraguard.harness.distributed.context import RankContext
        from loraguard.harness.distributed.world import init_process_group, world_from_env
        from loraguard.run.distributed.scenario import run_scenario

    world = world_from_env(job["device"])
    # Collectives time out later than the launcher's watchdog, so ranks blocked on a hung peer are still
    # blocked when the watchdog looks, and it can name who did not arrive.
    init_process_group(world, 2 * job["timeout"] + _COLLECTIVE_SLACK_S, f"file://{jobdir / 'store'}")
    ctx = RankContext(world, jobdir / "shared", job["options"], mark)
    ctx.step("joined the process group")
    with open(jobdir / f"rank{rank}.results", "a") as results:
        for index, name in enumerate(job["scenarios"]):
            freeze_heap()  # what the last scenario imported stays; DeepSpeed's collections then skip it
            outcome = run_scenario(ctx, name)
            results.write(json.dumps(outcome) + "\n")
            results.flush()
            if not settle(jobdir, world.world_size, rank, index, outcome["status"] in ("failed", "error")):
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
    import torch.distributed as dist

    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
