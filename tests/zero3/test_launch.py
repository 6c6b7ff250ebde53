"""The rank launcher: collectives work, a raised exception comes back with its traceback, a hang is named and
cleaned up, and nothing outlives the run."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from loraguard.run.distributed.launch import _watch, launch
from loraguard.run.distributed.scenario import resolve

pytestmark = pytest.mark.zero3
SCENARIOS = Path(__file__).with_name("scenarios.py")


def scenario(name: str) -> str:
    return f"{SCENARIOS}:{name}"


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie waiting for a parent that is not us to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def children_of_this_process() -> list[int]:
    mine = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            mine.append(int(stat.parent.name))
    return mine


def test_exception_on_rank1_is_reported_with_every_rank_traceback_and_the_run_goes_on():
    outcomes = launch(
        [scenario(s) for s in ("all_reduce_sum", "raise_on_rank1", "all_reduce_sum", "heap_frozen")], 2, timeout=30
    )
    assert [o.status for o in outcomes] == ["passed", "error", "passed", "passed"]
    failed = outcomes[1]
    assert [r.rank for r in failed.ranks] == [0, 1]
    rank1 = failed.ranks[1]
    assert "ValueError: deliberate failure on rank 1" in rank1.message
    assert 'raise ValueError("deliberate failure on rank 1")' in rank1.traceback
    assert "--- rank 0:" in failed.message and "--- rank 1:" in failed.message
    assert "scenarios.py" in failed.ranks[0].traceback  # rank 0's own traceback: its barrier lost the peer


def test_hang_names_the_rank_that_did_not_arrive_and_leaves_no_process(tmp_path):
    pid_file = tmp_path / "pids"
    # 3 s without progress once both ranks have joined; starting (importing torch in a rank can take 10 s on a
    # loaded 2-core machine) has its own, longer allowance.
    options = {"pid_file": str(pid_file)}
    [outcome] = launch([scenario("hang_on_rank1")], 2, timeout=3, options=options, start_timeout=60)
    assert outcome.status == "error"
    assert "timed out after 3 s without progress" in outcome.message
    assert "rank(s) [1] did not arrive at 'barrier', reached by rank(s) [0]" in outcome.message
    assert "in hang_on_rank1" in outcome.message  # the hung rank's stack
    pids = [int(p) for p in pid_file.read_text().split()] + list(outcome.pids)
    assert len(pids) == 6  # two ranks, each with a child, plus the ranks as the launcher saw them
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]
    assert children_of_this_process() == []


def test_unknown_scenario_is_an_error_naming_the_choices():
    """A rank resolves each name as here, inside the try that turns any exception into the scenario's "error"
    outcome with its message (shown above with a scenario that raises): no world needs starting to see the text."""
    with pytest.raises(KeyError, match="unknown scenario 'no-such-invariant'") as caught:
        resolve("no-such-invariant")
    assert "zero3-save-gathered" in str(caught.value) and "fsdp-merge" in str(caught.value)


class _Starting:
    """A world whose rank 1 never gets past "started" (stuck importing torch, say): the start allowance applies."""

    world_size = 2

    def progress(self) -> dict[int, tuple[int, str]]:
        return {0: (1, "joined the process group"), 1: (0, "started")}

    def running(self) -> list[int]:
        return [0, 1]

    def dump_stacks(self, ranks: list[int]) -> None:
        pass

    def tail(self, rank: int, name: str) -> str:
        return ""


def test_ranks_still_starting_are_given_the_start_allowance_not_the_timeout():
    start = time.monotonic()
    report = _watch(_Starting(), timeout=0.05, start_timeout=0.5)
    assert time.monotonic() - start >= 0.5
    assert "after 0.5 s without progress: rank(s) [1] did not arrive at 'joined the process group'" in report
