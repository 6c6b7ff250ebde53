"""The op-sequence invariant: drawn sequences of adapter operations, and the explicit ones, through the state machine.

`loraguard.invariants.sequence_machine` applies each operation (add, activate, delete, train, merge, unmerge, disable,
save+load, merge_and_unload) to the backend and to the reference and checks they agree after every step; here the
explicit sequences replay first, then Hypothesis draws more. A failure shrinks to a short printed sequence.
"""

from __future__ import annotations

import torch
from hypothesis import Phase, given, note
from hypothesis import seed as fixed_seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.stateful import run_state_machine_as_test

from loraguard.backends.base import Backend, wrappable
from loraguard.harness.draws import seed_only
from loraguard.harness.strategies import TreeSpec
from loraguard.harness.zoo import PLAIN
from loraguard.invariants.checks import InvariantViolation, expect
from loraguard.invariants.registry import Invariant, Skipped, register
from loraguard.invariants.sequence_examples import EXAMPLES, SequenceExample
from loraguard.invariants.sequence_machine import ID, SequenceMachine, sequence_machine

#: Steps per drawn sequence: long enough to reach merge-after-train or load-after-delete, short enough for CI.
STEPS = 8


def run_sequences(
    backend: Backend,
    dtypes: tuple[torch.dtype, ...] = (torch.float32,),
    device: str = "cpu",
    settings: hypothesis_settings | None = None,
    seed: int | None = None,
) -> None:
    """Run the machine; by default under the current Hypothesis profile (its max_examples) with STEPS steps."""
    if PLAIN not in wrappable(backend):
        raise Skipped(f"drawn sequences run on plain torch module trees; backend {backend.name!r} cannot wrap those")
    machine = sequence_machine(backend, dtypes, device)
    failed = []
    for example in EXAMPLES:
        try:
            replay(machine, example, backend)
        except InvariantViolation as err:
            failed.append(str(err))
    # every explicit sequence runs, so each bug they encode is reported, not only the first
    expect(not failed, f"{len(failed)} of {len(EXAMPLES)} explicit sequences fail:\n" + "\n".join(failed))
    if seed is not None:
        machine = fixed_seed(seed)(machine)
    # The explain phase re-runs a shrunk sequence hundreds of times for little news: the printed steps say it all.
    settings = settings or hypothesis_settings(stateful_step_count=STEPS)
    settings = hypothesis_settings(settings, phases=[p for p in settings.phases if p is not Phase.explain])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the models are tiny: more threads only add overhead (10x slower under xdist)
    try:
        with seed_only():
            run_state_machine_as_test(machine, settings=settings)
    finally:
        torch.set_num_threads(threads)


def replay(machine: type[SequenceMachine], example: SequenceExample, backend: Backend) -> None:
    """Run one explicit sequence through the machine, checking agreement after every step; a violation names it.

    Examples that need a capability the backend lacks, or a dtype the run does not include, are left out.
    """
    if not example.needs <= backend.capabilities:
        return

    @hypothesis_settings(max_examples=1, database=None, deadline=None, phases=[Phase.generate])
    @given(st.none())
    def run_example(_: None) -> None:  # inside a Hypothesis test, so the machine's notes and rejections work
        m = machine()
        try:
            m.start(
                tree=TreeSpec(example.leaves), config=example.config, dtype=example.dtype, seed=0, second=example.second
            )
            m.agrees_with_oracle()
            for step, (rule_name, arguments) in enumerate(example.steps, 1):
                note(f"step {step}: {rule_name}({arguments})")
                getattr(m, rule_name)(**arguments)
                m.agrees_with_oracle()
        finally:
            m.teardown()

    try:
        run_example()
    except Unsatisfiable:  # the release lacks a feature the example uses (the machine rejected it)
        return
    except Exception as err:  # noqa: BLE001 - a violation or the library's own error: name the sequence
        raise InvariantViolation(f"explicit sequence ({example.why}): {type(err).__name__}: {err}") from err


register(
    Invariant(
        ID,
        "Any sequence of adapter operations (add, activate, delete, train, merge, unmerge, disable, "
        "save and load, merge_and_unload) leaves the library agreeing with the reference after every step.",
        run_sequences,
        kind="sequence",
    )
)
