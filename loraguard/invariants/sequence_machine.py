"""The op-sequence state machine: the same drawn operations on a backend and on the reference, compared per step."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import NoReturn, TypeVar

import torch
from hypothesis import note, reject
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)
from torch import nn

from loraguard.backends.base import Backend, Unsupported, optional_methods
from loraguard.backends.reference import ReferenceBackend
from loraguard.core.config import LoraConfig
from loraguard.harness.scenarios import Scenario
from loraguard.harness.strategies import TreeSpec, configs, tree_zoo_model, trees
from loraguard.harness.zoo import run
from loraguard.invariants.adapter_tensors import as_oracle_dtype, raw_tensors
from loraguard.invariants.checks import (
    Inconclusive,
    assert_close,
    assert_effect,
    assert_equal,
    assert_same_keys,
    expect,
)
from loraguard.invariants.steps import perturb, read_saved, scratch_dir
from loraguard.reference import LoraModel

ID = "op-sequence"
_ORACLE = ReferenceBackend()
T = TypeVar("T")


class SequenceMachine(RuleBasedStateMachine):
    """What `replay` drives of the machine `sequence_machine` builds per backend: its start and its check."""

    def start(
        self, tree: TreeSpec, config: LoraConfig, dtype: torch.dtype, seed: int, second: LoraConfig | None
    ) -> object:
        """Wrap the drawn tree with adapter 'default' and maybe a second one."""
        raise NotImplementedError

    def agrees_with_oracle(self) -> None:
        """Check the backend and the reference agree."""
        raise NotImplementedError


def sequence_machine(
    backend: Backend, dtypes: tuple[torch.dtype, ...] = (torch.float32,), device: str = "cpu"
) -> type[SequenceMachine]:
    """A state machine class comparing `backend` with the reference on drawn trees, configs and operations."""
    caps = backend.capabilities
    # One tree per sequence, so every config drawn later (add_adapter) is over the tree `start` drew. Two leaves
    # at least: with one, no adapter can have modules_to_save and every adapter wraps the same module.
    tree = st.shared(trees(conv="conv" in caps).filter(lambda spec: len(spec.leaves) > 1), key=f"{ID}-tree")
    adapter_config = tree.flatmap(lambda spec: configs(spec, caps))
    can = caps.__contains__

    class OpSequence(SequenceMachine):
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
        def start(
            self, tree: TreeSpec, config: LoraConfig, dtype: torch.dtype, seed: int, second: LoraConfig | None
        ) -> str | MultipleResults[str]:
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
        def add_adapter(self, config: LoraConfig) -> MultipleResults[str]:
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
            optional_methods(backend).delete_adapter(self.model, name)
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
                    optional_methods(backend).load_adapter(loaded, where[name], name, trainable=trainable)
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
                    assert_equal(as_oracle_dtype(got[key], value), value, f"adapter '{name}': {key}")
            layers = self.oracle.lora_layers()
            for path in self._wrapped_paths():
                want_weight = layers[path].base_weight()
                largest = want_weight.detach().abs().max()
                peak = torch.maximum(self.peak.get(path, largest), largest)
                self.peak[path] = peak
                assert_close(
                    backend.base_weight(self.model, path),
                    want_weight,
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
        def _backend_call(self, call: Callable[[], T]) -> T:
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

        def _out(self, model: nn.Module) -> torch.Tensor:
            with torch.no_grad():
                return run(model, self.inputs)

    return OpSequence


def reject_with(reason: str) -> NoReturn:
    """Discard this sequence (it cannot decide anything), saying why in the verbose log."""
    note(reason)
    reject()
