"""How one invariant ended: the one result type of every runner (in process, on ranks, under `run_suite`)."""

from __future__ import annotations

from dataclasses import dataclass

#: Every status an outcome can have; "error" is an exception that is not a violation (the library crashed);
#: "partial": the first part of the check ran and held, the backend could not do the rest.
STATUSES = ("passed", "partial", "failed", "error", "skipped")


@dataclass(frozen=True)
class RankReport:
    """How one invariant ended on one rank of a distributed world."""

    rank: int
    status: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class Outcome:
    """One invariant on one scenario (or across the ranks of a world): status, what went wrong, how long it took.

    `scenario` is the scenario's id ("" for a distributed run, whose setup the invariant builds itself);
    `elapsed` is the seconds since the run began when the outcome was known; `ranks` and `pids` describe a
    distributed run rank by rank.
    """

    invariant: str
    scenario: str
    status: str
    message: str
    duration: float
    elapsed: float = 0.0
    ranks: tuple[RankReport, ...] = ()
    pids: tuple[int, ...] = ()

    @property
    def id(self) -> str:
        """The invariant ID, under the name `loraguard.zero3.run_suite` results have always used."""
        return self.invariant
