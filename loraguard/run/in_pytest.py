"""Running one invariant inside a pytest test: skips become pytest skips (with the backend's reason), violations
become short failure messages, every failure leaves a reproducer script, and drawn tests run under this run's
own Hypothesis settings (never the user's profile), seeded per invariant, with shrinking time-boxed."""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import pytest
from _pytest.outcomes import Failed  # pytest.fail.Exception, by a name a type checker resolves

from loraguard.backends import Backend
from loraguard.harness.draws import seed_only
from loraguard.harness.known_failures import KnownFailure
from loraguard.harness.scenarios import Scenario
from loraguard.harness.settings import Settings
from loraguard.harness.strategies import scenarios
from loraguard.invariants.checks import InvariantViolation
from loraguard.invariants.registry import Partial, Skipped, all_invariants, run_invariant
from loraguard.run.reproducer import describe, write_reproducer

if TYPE_CHECKING:
    import hypothesis
    import torch

#: loraguard's own source folder: its frames are left out of a crash's trace (a library installed under a path
#: with "loraguard" in it, such as the release matrix's ~/.cache/loraguard/envs, keeps its frames).
_OWN = str(Path(__file__).resolve().parents[1]) + os.sep


class RunExtras(TypedDict, total=False):
    """What a loraguard test leaves for the plugin's report, beside its outcome."""

    known: str  # where the known failure whose message the test's failure matched is listed (file:line)
    reproducer: str  # the reproducer script's path
    partial: str  # why only the first part of the check ran
    examples_skipped: dict[str, int]  # reason -> drawn examples skipped for it
    warnings: dict[str, int]  # the library's warning -> times raised (the plugin counts them)


#: The extras of the test running now. The plugin takes them (`take_extras`) before each test and after the call.
CURRENT: RunExtras = {}

#: The known failures of a test that are told apart by message (set by the plugin at collection; [] for none).
KNOWN = pytest.StashKey[list[KnownFailure]]()


class KnownFailureMet(Failed):
    """A test's failure that one of its known-failure entries explains by message: the xfail it was marked with
    accepts only this (``raises=``), so any other failure of the same test is reported."""


def told_apart(test: pytest.Item) -> list[KnownFailure]:
    """The test's known failures that name their message (empty where the test has none, or one without)."""
    return test.stash.get(KNOWN, [])


def failure_text(err: BaseException) -> str:
    """A failure as the report states it (and as known-failure messages are matched)."""
    return str(err) if isinstance(err, InvariantViolation) else f"{type(err).__name__} raised by the library: {err}"


def explained_by(known: list[KnownFailure], err: BaseException) -> KnownFailure | None:
    """The entry of `known` whose message `err` matches, if any."""
    text = failure_text(err)
    return next((k for k in known if k.explains(text)), None)


def take_extras() -> RunExtras:
    """What the test that just ran left, leaving `CURRENT` empty for the next one."""
    global CURRENT
    extras, CURRENT = CURRENT, {}
    return extras


def check(invariant_id: str, backend: Backend, scenario: Scenario, settings: Settings, test: pytest.Item) -> None:
    """Run one invariant on a zoo scenario; a Skipped becomes a pytest skip, a violation a short failure."""
    __tracebackhide__ = True
    failure: Exception | None = None
    try:
        run_invariant(all_invariants()[invariant_id], backend, scenario)
    except Partial as part:
        CURRENT["partial"] = str(part)
    except Skipped as why:
        pytest.skip(str(why))
    except Exception as err:
        failure = err
    if failure is not None:  # reported outside the handler, so the message is not chained to the violation
        known = explained_by(told_apart(test), failure)
        path = None if known else _reproducer(invariant_id, backend, scenario, settings, test)
        _fail(invariant_id, backend, scenario, failure, path, known=known)


def _reproducer(
    invariant_id: str, backend: Backend, scenario: Scenario, settings: Settings, test: pytest.Item
) -> Path | None:
    """The failing test's reproducer; none for a known failure (it is filed already) or with reproducers off.
    A failure that the test's known failures do not explain by message gets one."""
    xfail = test.get_closest_marker("xfail") is not None and not told_apart(test)
    if xfail or settings.reproducer_dir is None:
        return None
    path = write_reproducer(invariant_id, backend, scenario, settings, test.name)
    CURRENT["reproducer"] = str(path)
    return path


def _fail(
    invariant_id: str,
    backend: Backend,
    scenario: Scenario,
    err: BaseException,
    path: Path | None,
    extra: str = "",
    known: KnownFailure | None = None,
) -> None:
    """Fail the test with a message that leads with the invariant, the violation and the example (as the known
    failure `known`, where one explains it)."""
    __tracebackhide__ = True
    what = failure_text(err)
    message = (
        f"loraguard invariant {invariant_id!r} violated by {backend.name} {backend.version()}:\n  {what}\n"
        f"minimal example: {describe(scenario)}{extra}"
        + (
            f"\nreproducer: python {path}"
            if path is not None
            else "\n(no reproducer written: a known failure, or reproducers off)"
        )
    )
    if not isinstance(err, InvariantViolation):  # a crash: where in the library, without loraguard's frames
        frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith(_OWN)]
        message += "\nin the library:\n" + "".join(traceback.format_list(frames[-6:])).rstrip()
    if known is not None:
        CURRENT["known"] = known.source
        raise KnownFailureMet(f"known failure ({known.source}):\n{message}", pytrace=False)
    pytest.fail(message, pytrace=False)


def hypothesis_settings(settings: Settings, shrink: bool = True) -> hypothesis.settings:
    """This run's Hypothesis settings, applied per test (a user's own Hypothesis tests keep their profile);
    without `shrink`, a failure is reported as first found."""
    from hypothesis import HealthCheck, Phase
    from hypothesis import settings as hsettings

    left_out = {Phase.explain} if shrink else {Phase.explain, Phase.shrink}
    return hsettings(
        max_examples=settings.profile.max_examples,
        derandomize=settings.profile.derandomize,
        deadline=None,
        database=None,
        print_blob=False,
        report_multiple_bugs=False,
        phases=[p for p in Phase if p not in left_out],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


def expected_to_fail(test: pytest.Item) -> bool:
    """A known failure (xfail) of this run: its failing example is never shown, so it is not shrunk."""
    return test.get_closest_marker("xfail") is not None and not test.config.getoption("runxfail", False)


def seed_for(*parts: str) -> int:
    """A stable seed from names, so each invariant (and backend) meets its own examples, run after run."""
    return int.from_bytes(hashlib.sha256("/".join(parts).encode()).digest()[:8], "big")


class _Drawn:
    """State of one drawn test across Hypothesis's calls: skipped examples, first failure, the shrink budget."""

    def __init__(self, budget: float | None) -> None:
        self.budget = budget
        self.skipped: Counter[str] = Counter()
        self.ran = 0
        self.first_failure: float | None = None
        self.failing: Scenario | None = None
        self.known: dict[str, tuple[KnownFailure, BaseException, Scenario]] = {}  # known bugs met, by pattern

    def over_budget(self) -> bool:
        """True once shrinking has used its budget; the final replay of the failing example always runs."""
        from hypothesis.control import current_build_context

        if self.budget is None or self.first_failure is None:
            return False
        return time.perf_counter() - self.first_failure > self.budget and not current_build_context().is_final


#: Drawn examples the backend refuses, with none run yet, after which the test is skipped instead of drawing on:
#: Hypothesis would otherwise draw hundreds before giving up, each building a model.
GIVE_UP_AFTER = 10


def check_drawn(invariant_id: str, backend: Backend, settings: Settings, test: pytest.Item) -> None:
    """Draw scenarios within the backend's capabilities and run the invariant on each.

    An example the backend cannot run is discarded and its reason counted; if none could run, the test is skipped
    with the commonest reason (never a Hypothesis Unsatisfiable). A failure shrinks for at most the run's budget,
    then fails with the minimal example and a reproducer.
    """
    __tracebackhide__ = True
    from hypothesis import given, reject, seed
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    inv = all_invariants()[invariant_id]
    state = _Drawn(settings.shrink_seconds)
    caps = backend.capabilities
    lacking = sorted((inv.needs | ({"multi_adapter"} if inv.needs_second else set())) - set(caps))
    if lacking:  # no drawn example could run: say so once instead of drawing them all
        pytest.skip(f"backend {backend.name!r} lacks {', '.join(lacking)}")
    if inv.needs_task_type:
        pytest.skip("drawn scenarios are plain module trees without a task_type; the zoo's task models run it")
    dtypes = tuple(d for d in settings.dtypes if _dtype_ok(d, caps)) or tuple(settings.dtypes)
    strategy = scenarios(caps, dtypes, settings.device, modules_to_save=inv.needs_modules_to_save)
    told = told_apart(test)

    # a whole-test known failure is not shrunk; where known bugs are told apart by message, only the others raise
    @hypothesis_settings(settings, shrink=bool(told) or not expected_to_fail(test))
    @given(data=st.data())
    def drawn(data: st.DataObject) -> None:
        scenario = data.draw(strategy, label="scenario")  # drawn first: a replay must draw what it drew before
        if state.over_budget():
            # shrinking has had its time: this candidate passes untried. Not a rejection: Hypothesis may replay an
            # example it ran before, and one that failed or passed then and is invalid now is reported as flaky.
            return
        try:
            run_invariant(inv, backend, scenario)
        except Partial:
            state.ran += 1
        except Skipped as why:
            state.skipped[str(why)] += 1
            if not state.ran and state.skipped.total() >= GIVE_UP_AFTER:
                _skip_nothing_ran(state, stopped=True)  # pytest's skip passes through Hypothesis unshrunk
            reject()
        except Exception as err:
            known = explained_by(told, err)
            if known is None:
                if state.first_failure is None:
                    state.first_failure = time.perf_counter()
                state.failing = scenario
                raise
            # a known bug, told by its message: noted, and drawing goes on, so a second bug is still found
            state.known.setdefault(known.pattern, (known, err, scenario))
            state.ran += 1
        else:
            state.ran += 1

    if settings.profile.derandomize:
        drawn = seed(seed_for(invariant_id, backend.name))(drawn)
    failure: Exception | None = None
    try:
        with seed_only():
            drawn()
    except Unsatisfiable:
        pass  # judged below: nothing could run
    except Exception as err:
        if state.failing is None:
            raise
        failure = err
    if failure is not None and state.failing is not None:  # outside the handler: no chained traceback
        path = _reproducer(invariant_id, backend, state.failing, settings, test)
        budget = "" if state.budget is None else f" (shrunk for at most {state.budget:g} s: --loraguard-shrink full)"
        _fail(invariant_id, backend, state.failing, failure, path, budget)
    if state.known:
        entry, met, example = next(iter(state.known.values()))
        others = [p for p in state.known if p != entry.pattern]
        extra = f"\nalso met: {', '.join(others)}" if others else ""
        _fail(invariant_id, backend, example, met, None, f" (an example met, not shrunk){extra}", entry)
    if state.skipped:
        CURRENT["examples_skipped"] = dict(state.skipped)
    if not state.ran:
        _skip_nothing_ran(state, stopped=False)


def _skip_nothing_ran(state: _Drawn, stopped: bool) -> None:
    """Skip the drawn test with the commonest reason its examples could not run."""
    CURRENT["examples_skipped"] = dict(state.skipped)
    reason, count = state.skipped.most_common(1)[0] if state.skipped else ("no example was drawn", 0)
    more = f" (stopped drawing after {GIVE_UP_AFTER})" if stopped else ""
    pytest.skip(f"no drawn example could run ({count} skipped): {reason}{more}")


def _dtype_ok(dtype: torch.dtype, caps: frozenset[str]) -> bool:
    import torch

    return {torch.bfloat16: "bfloat16", torch.float16: "float16"}.get(dtype, "") in caps | {""}


def check_sequence(invariant_id: str, backend: Backend, settings: Settings) -> None:
    """Run a state-machine invariant under this run's Hypothesis settings, seeded per invariant."""
    __tracebackhide__ = True
    from hypothesis import settings as hsettings

    from loraguard.invariants.sequences import STEPS

    derandomized = settings.profile.derandomize
    try:
        all_invariants()[invariant_id].check(
            backend,
            tuple(settings.dtypes),
            settings.device,
            settings=hsettings(hypothesis_settings(settings), stateful_step_count=STEPS),
            seed=seed_for(invariant_id, backend.name) if derandomized else None,
        )
    except Skipped as why:  # e.g. a backend that cannot wrap the plain module trees sequences are drawn on
        pytest.skip(str(why))
