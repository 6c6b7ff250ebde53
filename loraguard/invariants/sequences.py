"""Sequences of adapter operations as a differential stateful test: a backend and the oracle, step by step.

`sequence_machine(backend, ...)` builds a Hypothesis state machine that applies the same drawn operations (add,
activate, delete, train, merge, unmerge, disable, save+load, merge_and_unload) to the backend's model and to the
reference, and after every step checks they agree: every adapter's raw tensors bit for bit, no deleted adapter
left behind, base weights and outputs within the dtype's bound. A failure shrinks to a short printed sequence.
"""

from __future__ import annotations

import copy
from typing import NoReturn

import torch
from hypothesis import Phase, given, note, reject
from hypothesis import seed as fixed_seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from loraguard.backends.base import Backend, Unsupported, wrappable
from loraguard.backends.reference import ReferenceBackend
from loraguard.core.config import LoraConfig
from loraguard.harness.scenarios import Scenario
from loraguard.harness.strategies import TreeSpec, configs, tree_zoo_model, trees
from loraguard.harness.zoo import PLAIN, run
from loraguard.invariants.checks import (
    Inconclusive,
    InvariantViolation,
    assert_close,
    assert_effect,
    assert_equal,
    assert_same_keys,
    expect,
)
from loraguard.invariants.registry import Invariant, Skipped, register
from loraguard.invariants.sequence_examples import EXAMPLES, SequenceExample
from loraguard.invariants.steps import perturb, read_saved, scratch_dir
from loraguard.reference import LoraModel

ID = "op-sequence"
#: Steps per drawn sequence: long enough to reach merge-after-train or load-after-delete, short enough for CI.
STEPS = 8
_ORACLE = ReferenceBackend()


def sequence_machine(
    backend: Backend, dtypes: tuple[torch.dtype, ...] = (torch.float32,), device: str = "cpu"
) -> type[RuleBasedStateMachine]:
    """A state machine class comparing `backend` with the reference on drawn trees, configs and operations."""
    caps = backend.capabilities
    # One tree per sequence, so every config drawn later (add_adapter) is over the tree `start` drew. Two leaves
    # at least: with one, no adapter can have modules_to_save and every adapter wraps the same module.
    tree = st.shared(trees(conv="conv" in caps).filter(lambda spec: len(spec.leaves) > 1), key=f"{ID}-tree")
    adapter_config = tree.flatmap(lambda spec: configs(spec, caps))
    can = caps.__contains__

    class OpSequence(RuleBasedStateMachine):
        """Applies each step to the backend's model and to the oracle, then checks that they agree."""

        adapters = Bundle("adapters")

        def __init__(self) -> None:
            super().__init__()
            self.names_seen: list[str] = []  # every adapter ever added, so a deleted one is checked to be gone
            self.roundings = 0  # merges and unmerges so far: each rounds the base weights once on each side
            self.peak: dict[str, torch.Tensor] = {}  # per wrapped module, the largest weight magnitude seen

        # -- start ---------------------------------------------------------------------------------------------
        @initialize(
            target=adapters,
            tree=tree,
            config=adapter_config,
            dtype=st.sampled_from(dtypes),
            seed=st.integers(0, 2**16),
            second=st.none() | adapter_config if can("multi_adapter") else st.none(),
        )
        def start(self, tree: TreeSpec, config: LoraConfig, dtype: torch.dtype, seed: int, second: LoraConfig | None):
            """Wrap the drawn tree with adapter 'default' and, most sequence bugs needing two, maybe a second one."""
            self.scenario = Scenario(tree_zoo_model(tree), config, None, dtype, device, seed, label=ID)
            try:
                self.oracle = LoraModel(self.scenario.base(), config)
            except ValueError as refused:  # a config the oracle refuses is not a scenario
                reject_with(f"the reference refuses the config: {refused}")
            self.inputs = self.scenario.inputs()
            base = self.scenario.base()
            with torch.no_grad():
                base_out = run(base, self.inputs)
            self.model = self._backend_call(lambda: backend.wrap(base, config))
            self._adopt("default")
            try:
                assert_effect(self._out(self.model), base_out, dtype, "adapter 'default' output vs base output")
            except Inconclusive as weak:
                reject_with(str(weak))
            return multiple("default", *self._add(second)) if second else "default"

        # -- adapters ------------------------------------------------------------------------------------------
        @precondition(lambda self: can("multi_adapter") and not self._merged())
        @rule(target=adapters, config=adapter_config)
        def add_adapter(self, config: LoraConfig):
            return multiple(*self._add(config))

        @precondition(lambda self: not self._merged())
        @rule(names=st.lists(adapters, min_size=1, max_size=3 if can("multi_adapter") else 1, unique=True))
        def set_adapter(self, names: list[str]) -> None:
            shared = [
                p
                for p, w in self.oracle.saved_modules().items()
                if len([n for n in names if n in w.modules_to_save]) > 1
            ]
            if shared:
                note(f"set_adapter({names}) skipped: both keep a copy of {shared}; they cannot be active together")
                return
            self.oracle.set_adapter(names)
            backend.set_adapter(self.model, names)

        @precondition(lambda self: can("delete_adapter") and len(self.oracle.peft_config) > 1 and not self._merged())
        @rule(name=consumes(adapters))
        def delete_adapter(self, name: str) -> None:
            self.oracle.delete_adapter(name)
            backend.delete_adapter(self.model, name)
            if not self.oracle.active_adapters:
                # Which adapter becomes active after deleting the only active one is the library's choice (peft
                # picks a remaining one, the reference none): activate the first remaining one on both sides.
                first = list(self.oracle.peft_config)[:1]
                self.oracle.set_adapter(first)
                backend.set_adapter(self.model, first)

        @precondition(lambda self: not self._merged())
        @rule(name=adapters, seed=st.integers(0, 255))
        def train(self, name: str, seed: int) -> None:
            """Simulated training: perturb the backend's tensors of `name`, then give the oracle the same values."""
            perturb(backend, self.model, name, seed)
            self._adopt(name)

        # -- merging -------------------------------------------------------------------------------------------
        @rule()
        def merge(self) -> None:
            self.oracle.merge()
            backend.merge(self.model)
            self.roundings += 1

        @precondition(lambda self: can("unmerge") and self._merged())
        @rule()
        def unmerge(self) -> None:
            self.oracle.unmerge()
            backend.unmerge(self.model)
            self.roundings += 1

        @rule()
        def merge_and_unload(self) -> None:
            """On copies of both models: the plain model left holds no LoRA internals and computes the same."""
            plain = backend.merge_and_unload(copy.deepcopy(self.model))
            want = copy.deepcopy(self.oracle).merge_and_unload()
            got_state, want_state = plain.state_dict(), want.state_dict()
            assert_same_keys(got_state, want_state, "merge_and_unload: the plain model's parameters")
            for key, value in want_state.items():
                assert_close(got_state[key], value, self.scenario.dtype, f"merge_and_unload: '{key}'")
            with torch.no_grad():
                assert_close(
                    run(plain, self.inputs),
                    run(want, self.inputs),
                    self.scenario.dtype,
                    "merge_and_unload: output of the plain model",
                    self._depth(),
                )

        # -- disable, save and load ----------------------------------------------------------------------------
        @precondition(lambda self: can("disable") and not self._merged())
        @rule()
        def disable_adapter(self) -> None:
            with backend.disabled(self.model):
                got = self._out(self.model)
            with self.oracle.disable_adapter():
                want = self._out(self.oracle)
            assert_close(
                got, want, self.scenario.dtype, "output with adapters disabled vs the reference's", 1 + self.roundings
            )

        @precondition(
            lambda self: (
                can("save_load") and not self._merged() and (len(self.oracle.peft_config) == 1 or can("load_adapter"))
            )
        )
        @rule(trainable=st.booleans())
        def save_and_load(self, trainable: bool) -> None:
            """Save every adapter, load them all onto a fresh base model (to train on, or for inference: then
            nothing may be trainable), and continue with the loaded model."""
            names = list(self.oracle.peft_config)
            with scratch_dir() as d:
                backend.save(self.model, d)
                where = {n: d if n == "default" else d / n for n in names}
                for name in names if can("peft_format") else ():
                    assert_same_keys(
                        read_saved(where[name]),
                        self.oracle.adapter_state_dict(name),
                        f"keys saved for adapter '{name}'",
                    )
                loaded = backend.load(self.scenario.base(), where[names[0]], names[0], trainable=trainable)
                for name in names[1:]:
                    backend.load_adapter(loaded, where[name], name, trainable=trainable)
            if not trainable:
                still = sorted(backend.trainable(loaded))
                expect(not still, f"parameters trainable after loading {names} for inference: {still[:5]}")
            backend.set_adapter(loaded, list(self.oracle.active_adapters))
            self.model = loaded

        # -- the check after every step ------------------------------------------------------------------------
        @invariant()
        def agrees_with_oracle(self) -> None:
            """Same adapters with bit-equal tensors, none left over after a delete, base weights and outputs close."""
            for name in self.names_seen:
                got = raw_tensors(backend, self.model, name)
                if name not in self.oracle.peft_config:
                    expect(not got, f"adapter '{name}' was deleted but the backend still holds {sorted(got)[:3]}")
                    continue
                want = raw_tensors(_ORACLE, self.oracle, name)
                assert_same_keys(got, want, f"tensors of adapter '{name}'")
                for key, value in want.items():
                    assert_equal(_as_oracle_dtype(got[key], value), value, f"adapter '{name}': {key}")
            layers = self.oracle.lora_layers()
            for path in self._wrapped_paths():
                want = layers[path].base_weight()
                peak = torch.maximum(self.peak.get(path, want.detach().abs().max()), want.detach().abs().max())
                self.peak[path] = peak
                assert_close(
                    backend.base_weight(self.model, path),
                    want,
                    self.scenario.dtype,
                    f"base weight of '{path}'",
                    1 + self.roundings,
                    via=peak,
                )
            assert_close(
                self._out(self.model),
                self._out(self.oracle),
                self.scenario.dtype,
                f"output with adapters {self.oracle.active_adapters} active",
                self._depth(),
            )

        # -- helpers -------------------------------------------------------------------------------------------
        def _backend_call(self, call):
            try:
                return call()
            except Unsupported as why:  # this release lacks a feature the drawn config uses
                reject_with(str(why))

        def _add(self, config: LoraConfig) -> list[str]:
            """Add an adapter on both sides; none (with a note) where the reference refuses the config."""
            name = f"adapter{len(self.names_seen)}"
            try:
                self.oracle.add_adapter(name, config)  # validates before changing anything
            except ValueError as refused:
                note(f"adding {name!r} skipped: the reference refuses the config: {refused}")
                return []
            self._backend_call(lambda: backend.add_adapter(self.model, name, config))
            self._adopt(name)
            return [name]

        def _adopt(self, name: str) -> None:
            """Give the oracle the backend's current values of adapter `name` (same keys required first)."""
            if name not in self.names_seen:
                self.names_seen.append(name)
            got, want = raw_tensors(backend, self.model, name), raw_tensors(_ORACLE, self.oracle, name)
            assert_same_keys(got, want, f"tensors of adapter '{name}'")
            with torch.no_grad():
                for key, value in want.items():
                    value.copy_(got[key])

        def _merged(self) -> bool:
            return any(layer.merged_adapters for layer in self.oracle.lora_layers().values())

        def _wrapped_paths(self) -> set[str]:
            return {p for n in self.oracle.peft_config for p in _ORACLE.lora_factors(self.oracle, n)}

        def _depth(self) -> int:
            """Roundings that add up in the output: one per active adapter per wrapped module, one per merge/unmerge."""
            layers = sum(len(_ORACLE.lora_factors(self.oracle, n)) for n in self.oracle.active_adapters)
            return max(1, layers) + self.roundings

        def _out(self, model) -> torch.Tensor:
            with torch.no_grad():
                return run(model, self.inputs)

    return OpSequence


def raw_tensors(backend: Backend, model: torch.nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """One adapter's tensors as the backend holds them, by module path and role (factors, lora_B bias, copies)."""
    out: dict[str, torch.Tensor] = {}
    for path, (a, b) in backend.lora_factors(model, adapter).items():
        out[f"{path}: lora_A"], out[f"{path}: lora_B"] = a, b
    for path, bias in backend.lora_biases(model, adapter).items():
        out[f"{path}: lora_B bias"] = bias
    for path, state in backend.saved_copies(model, adapter).items():
        out.update({f"{path}: modules_to_save {key}": value for key, value in state.items()})
    return out


def _as_oracle_dtype(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """A backend may keep adapter tensors wider than the model (peft's autocast_adapter_dtype keeps float32 on a
    bfloat16 model); the oracle holds them rounded to the model's dtype, so compare at that precision."""
    wider = got.is_floating_point() and want.is_floating_point() and got.dtype.itemsize > want.dtype.itemsize
    return got.to(want.dtype) if wider else got


def reject_with(reason: str) -> NoReturn:
    """Discard this sequence (it cannot decide anything), saying why in the verbose log."""
    note(reason)
    reject()


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
        run_state_machine_as_test(machine, settings=settings)
    finally:
        torch.set_num_threads(threads)


def replay(machine: type[RuleBasedStateMachine], example: SequenceExample, backend: Backend) -> None:
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
