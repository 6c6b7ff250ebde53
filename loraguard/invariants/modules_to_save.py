"""modules_to_save: training changes only the adapter's copy; the original stays as it was; the copy saves and loads."""

from __future__ import annotations

from loraguard.backends.base import Backend
from loraguard.harness.scenarios import Scenario, clone_state
from loraguard.invariants.checks import assert_equal, assert_state_equal, expect
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import scratch_dir, train_step, wrap


@invariant(
    "modules-to-save",
    "Training changes the adapter's modules_to_save copy, never the original module; the "
    "copy is saved and restored under its module's own keys.",
    needs=("modules_to_save", "disable", "save_load"),
    needs_modules_to_save=True,
)
def copies_trained_originals_untouched(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    before = {p: clone_state(s) for p, s in backend.saved_copies(wrapped.model, "default").items()}
    expect(bool(before), f"modules_to_save={scenario.config.modules_to_save!r} produced no trainable copy")
    train_step(wrapped.model, wrapped.inputs)
    after = backend.saved_copies(wrapped.model, "default")
    changed = [p for p in before if any(not v.equal(before[p][k]) for k, v in after[p].items())]
    expect(bool(changed), "a training step left every modules_to_save copy unchanged: the copies are not trained")
    with backend.disabled(wrapped.model):
        assert_equal(
            wrapped.out(),
            wrapped.base_out,
            "output with adapters disabled after training (originals must be untouched)",
        )
    trained = {p: clone_state(s) for p, s in after.items()}
    with scratch_dir() as d:
        backend.save(wrapped.model, d)
        loaded = backend.load(scenario.base(), d)
    restored = backend.saved_copies(loaded, "default")
    expect(set(restored) == set(trained), f"copies after load {sorted(restored)} != saved {sorted(trained)}")
    for path, state in trained.items():
        assert_state_equal(restored[path], state, f"modules_to_save copy of '{path}' after load")
