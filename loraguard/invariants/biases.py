"""Base biases: with peft's `bias` option an adapter also trains base biases, saves them and restores them on load."""

from __future__ import annotations

import dataclasses

from loraguard.backends.base import Backend
from loraguard.harness.scenarios import Scenario, expected_parameters, expected_saved_keys, expected_trainable
from loraguard.harness.zoo import run
from loraguard.invariants.checks import assert_equal, assert_same_keys, expect
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import read_saved, scratch_dir, train_step, wrap

#: The modes that train base biases: the wrapped layers' own ("lora_only"), every bias of the model ("all").
TRAINED_MODES = ("lora_only", "all")


@invariant(
    "trained-biases",
    "With bias='lora_only' or 'all' exactly the adapter's parameters and the biases the mode names are trainable; "
    "after a training step they are saved under peft's keys and a load computes what the trained model did.",
    needs=("bias", "save_load"),
)
def biases_trained_saved_restored(backend: Backend, scenario: Scenario) -> None:
    for mode in TRAINED_MODES:
        config = dataclasses.replace(scenario.config, bias=mode)
        moded = dataclasses.replace(scenario, config=config)
        wrapped = wrap(backend, moded)
        adapters = [("default", config)]
        distinct = expected_parameters(moded, adapters)  # a tied bias (BERT's decoder) counts once
        want, got = expected_trainable(moded, adapters, "default") & distinct, backend.trainable(wrapped.model)
        expect(
            got == want,
            f"bias={mode!r}: trainable: unexpected {sorted(got - want)[:5]}, missing {sorted(want - got)[:5]}",
        )
        train_step(wrapped.model, wrapped.inputs)
        trained = wrapped.out()
        with scratch_dir() as d:
            backend.save(wrapped.model, d)
            if "peft_format" in backend.capabilities:
                keys = expected_saved_keys(moded, adapters, "default")
                assert_same_keys(read_saved(d), dict.fromkeys(keys), f"bias={mode!r}: saved keys")
            loaded = backend.load(scenario.base(), d)
        assert_equal(run(loaded, wrapped.inputs), trained, f"bias={mode!r}: output after load vs the trained model")
