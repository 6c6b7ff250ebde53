"""Save/load round-trips are exact: tensors, key names, config fields, outputs (the merge-is-a-no-op bug)."""

from __future__ import annotations

from pathlib import Path

import torch

from loraguard.backends.base import Backend
from loraguard.core.config import LoraConfig
from loraguard.core.keys import embedded_adapter_name, parse_factor_key
from loraguard.core.tasks import TASK_HEADS
from loraguard.harness.scenarios import Scenario, expected_saved_keys
from loraguard.harness.zoo import run
from loraguard.invariants.checks import assert_equal, assert_same_keys, assert_state_equal, expect
from loraguard.invariants.registry import invariant
from loraguard.invariants.steps import adapter_snapshot, read_saved, scratch_dir, wrap

#: Config fields whose meaning must survive a save (peft may add or normalise others).
PRESERVED_FIELDS = (
    "r",
    "lora_alpha",
    "use_rslora",
    "rank_pattern",
    "alpha_pattern",
    "lora_bias",
    "lora_dropout",
    "task_type",
    "trainable_token_indices",
)


def check_saved_format(directory: Path, scenario: Scenario, snapshot: dict[str, torch.Tensor]) -> None:
    """The saved file holds exactly the format's keys (no adapter name in them) with the adapter's exact tensors."""
    saved = read_saved(directory)
    modules = {n for n, _ in scenario.base().named_modules()}  # a model may name its own modules 'default'
    embedded = {k: why for k in saved if (why := embedded_adapter_name(k, known_modules=modules))}
    expect(not embedded, f"saved keys carry an adapter name: {dict(list(embedded.items())[:3])}")
    assert_same_keys(saved, expected_saved_keys(scenario, [("default", scenario.config)], "default"), "saved keys")
    assert_state_equal(saved, snapshot, "saved tensors vs the model's")


def check_config_preserved(directory: Path, config: LoraConfig) -> None:
    """The saved config reads back with the same meaning."""
    loaded = LoraConfig.load(directory)
    for name in PRESERVED_FIELDS:
        expect(
            getattr(loaded, name) == getattr(config, name),
            f"adapter_config.json field '{name}': saved {getattr(loaded, name)!r}, "
            f"configured {getattr(config, name)!r}",
        )
    implied = set(TASK_HEADS.get(config.task_type or "", ()))  # the task's heads, saved or not, are meant
    for name in ("target_modules", "modules_to_save"):
        got, want = getattr(loaded, name), getattr(config, name)
        if name == "modules_to_save" and implied:
            got, want = sorted(set(got or []) - implied), sorted(set(want or []) - implied)
        as_set = lambda v: set(v) if isinstance(v, list) else v
        expect(
            as_set(got) == as_set(want) or (not got and not want),
            f"adapter_config.json field '{name}': saved {got!r}, configured {want!r}",
        )


@invariant(
    "roundtrip",
    "save then load (the library's own format) restores every tensor bit for bit, with the same outputs and "
    "merged weights; a peft-format save also has peft's key names and the config's fields.",
    needs=("save_load",),
)
def save_load_exact(backend: Backend, scenario: Scenario) -> None:
    wrapped = wrap(backend, scenario)
    snapshot = adapter_snapshot(backend, wrapped.model, "default", scenario)
    out = wrapped.out()
    with scratch_dir() as d:
        backend.save(wrapped.model, d)
        if "peft_format" in backend.capabilities:
            check_saved_format(d, scenario, snapshot)
            check_config_preserved(d, scenario.config)
        loaded = backend.load(scenario.base(), d)
    after = adapter_snapshot(backend, loaded, "default", scenario)
    for key, tensor in snapshot.items():
        factor = parse_factor_key(key)
        if factor is not None and factor.role in ("lora_B", "lora_embedding_B") and tensor.any():
            expect(
                bool(after[key].any()) if key in after else False,
                f"{key}: non-zero when saved, all zeros or absent after load (the weights were not loaded)",
            )
    assert_state_equal(after, snapshot, "tensors after load")
    with torch.no_grad():
        assert_equal(run(loaded, wrapped.inputs), out, "output after load vs before save")
    backend.merge(wrapped.model)
    backend.merge(loaded)
    for path in wrapped.weight_paths():
        assert_equal(
            backend.base_weight(loaded, path),
            backend.base_weight(wrapped.model, path),
            f"merged weight of '{path}' after load vs before save",
        )
