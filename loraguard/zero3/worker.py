"""The process the launcher starts for each rank: ``python -m loraguard.zero3.worker JOBDIR``.

It joins the file rendezvous in JOBDIR, runs the job's scenarios in order and appends one JSON line per
scenario to ``rank<N>.results``. After a failure it exits at once, so peers blocked on it in a collective fail
fast instead of hanging; the launcher restarts the world for the remaining scenarios.
"""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import sys
from pathlib import Path

_COLLECTIVE_SLACK_S = 10.0


def progress_writer(jobdir: Path, rank: int):
    """A progress callback that replaces ``rank<N>.progress`` atomically with "<seq>\\t<label>"."""
    path, tmp = jobdir / f"rank{rank}.progress", jobdir / f"rank{rank}.progress.tmp"

    def mark(seq: int, label: str) -> None:
        tmp.write_text(f"{seq}\t{label}")
        os.replace(tmp, path)

    return mark


def main(argv: list[str]) -> int:
    jobdir = Path(argv[0])
    job = json.loads((jobdir / "job.json").read_text())
    rank = int(os.environ["RANK"])
    stacks = open(jobdir / f"rank{rank}.stack", "w")  # noqa: SIM115 - must outlive main for faulthandler
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    mark = progress_writer(jobdir, rank)
    mark(0, "started")

    from loraguard.zero3.rank import RankContext, run_scenario
    from loraguard.zero3.world import init_process_group, world_from_env

    world = world_from_env(job["device"])
    # Collectives time out later than the launcher's watchdog, so ranks blocked on a hung peer are still
    # blocked when the watchdog looks, and it can name who did not arrive.
    init_process_group(world, 2 * job["timeout"] + _COLLECTIVE_SLACK_S, f"file://{jobdir / 'store'}")
    ctx = RankContext(world, jobdir / "shared", job["options"], mark)
    ctx.step("joined the process group")
    with open(jobdir / f"rank{rank}.results", "a") as results:
        for name in job["scenarios"]:
            outcome = run_scenario(ctx, name)
            results.write(json.dumps(outcome) + "\n")
            results.flush()
            if outcome["status"] in ("failed", "error"):
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
    import torch.distributed as dist

    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
