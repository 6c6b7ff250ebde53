"""Steps invariants share: wrapping a scenario's model, simulated training, snapshots and reading saved files."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from loraguard.backends.base import Backend, optional_methods
from loraguard.core.config import WEIGHTS_NAME, LoraConfig
from loraguard.core.keys import MAGNITUDE, MODULES_TO_SAVE, TOKENS, AdapterKey
from loraguard.core.merge_math import LayerKind
from loraguard.core.module_access import weight_at
from loraguard.harness.scenarios import Scenario, expected_layout, layer_kind, parameter_key_paths
from loraguard.harness.zoo import run
from loraguard.invariants.checks import expect


@dataclass
class Wrapped:
    """A scenario's model wrapped by a backend, with what it looked like before."""

    model: nn.Module
    base: nn.Module  # the module handed to backend.wrap (adapted in place by peft-style libraries)
    inputs: tuple
    base_out: torch.Tensor
    base_weights: dict[str, torch.Tensor]
    targets: dict[str, tuple[LayerKind, bool]]
    tokens: dict[str, list[int]] = field(default_factory=dict)  # embedding path -> rows of trainable tokens
    tied: dict[str, str] = field(default_factory=dict)  # a module tied to such an embedding -> the embedding

    def out(self) -> torch.Tensor:
        with torch.no_grad():
            return run(self.model, self.inputs)

    def weight_paths(self) -> list[str]:
        """Every module whose weight an adapter changes at merge: LoRA targets, token embeddings, their tied heads."""
        return [*self.targets, *self.tokens, *self.tied]


def wrap(backend: Backend, scenario: Scenario, config: LoraConfig | None = None, train: bool = True) -> Wrapped:
    """Build the base, record its output and target weights, wrap it, and check the backend wrapped exactly the
    modules the oracle selects (dot-boundary names, never LoRA internals). With `train`, DoRA magnitudes and
    trainable tokens are moved off their initial values (where they change nothing)."""
    config = config or scenario.config
    base, x = scenario.base(), scenario.inputs()
    targets, tokens, tied = expected_layout(scenario, [("default", config)])
    with torch.no_grad():
        base_out = run(base, x)
    w0 = {p: weight_at(base, p).detach().clone() for p in [*targets, *tokens, *tied]}
    model = backend.wrap(base, config)
    if config.use_dora and train:
        train_magnitudes(backend, model, "default", scenario.seed)
    got = set(backend.lora_factors(model, "default"))
    expect(
        got == set(targets),
        f"wrapped modules differ from target_modules={config.target_modules!r}: unexpected "
        f"{sorted(got - set(targets))}, missing {sorted(set(targets) - got)}",
    )
    if tokens:
        check_token_rows(backend, model, "default", tokens, config)
        if train:
            train_tokens(backend, model, "default", scenario.seed)
    return Wrapped(model, base, x, base_out, w0, targets, tokens, tied)


def check_token_rows(
    backend: Backend, model: nn.Module, adapter: str, tokens: dict[str, list[int]], config: LoraConfig
) -> None:
    """The backend trains rows of exactly the oracle's embeddings, one value row per listed index."""
    rows = optional_methods(backend).token_rows(model, adapter)
    expect(
        set(rows) == set(tokens),
        f"trainable_token_indices={config.trainable_token_indices!r} gave rows on {sorted(rows)}, "
        f"expected {sorted(tokens)}",
    )
    for path, values in rows.items():
        expect(
            values.shape[0] == len(tokens[path]),
            f"'{path}': {values.shape[0]} trainable rows for {len(tokens[path])} indices",
        )


def train_tokens(backend: Backend, model: nn.Module, adapter: str, seed: int = 0) -> None:
    """Simulated training of trainable tokens: each row moves off the value it started from (the row itself), by
    noise 1.5x the rows' mean magnitude."""
    gen = torch.Generator().manual_seed(seed + 11)
    with torch.no_grad():
        for values in optional_methods(backend).token_rows(model, adapter).values():
            noise = torch.randn(values.shape, generator=gen) * 1.5 * values.detach().abs().mean().item()
            values.add_(noise.to(values.device, values.dtype))


def magnitudes(backend: Backend, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """DoRA magnitude vectors of `adapter` by module path ({} for a backend without DoRA)."""
    return optional_methods(backend).lora_magnitudes(model, adapter) if "dora" in backend.capabilities else {}


def train_magnitudes(backend: Backend, model: nn.Module, adapter: str, seed: int = 0) -> None:
    """Give each DoRA magnitude its own value (x 0.6..1.4): a fresh one equals the norm, where m/||W+dW|| is 1
    and a merge or unmerge that forgets the rescaling would go unseen."""
    gen = torch.Generator().manual_seed(seed + 7)
    with torch.no_grad():
        for m in magnitudes(backend, model, adapter).values():
            m.mul_((0.6 + 0.8 * torch.rand(m.shape, generator=gen)).to(m.device, m.dtype))


def perturb(backend: Backend, model: nn.Module, adapter: str, seed: int = 1) -> None:
    """Simulated training of one adapter: change its factors, magnitudes and modules_to_save copies in place."""
    gen = torch.Generator().manual_seed(seed)
    tensors = [t for ab in backend.lora_factors(model, adapter).values() for t in ab]
    tensors += list(magnitudes(backend, model, adapter).values())
    tensors += list(token_rows(backend, model, adapter).values())
    tensors += [t for state in backend.saved_copies(model, adapter).values() for t in state.values()]
    with torch.no_grad():
        for t in tensors:
            if t.is_floating_point():
                t.add_((torch.randn(t.shape, generator=gen) * 0.05).to(t.device, t.dtype))


def adapter_snapshot(backend: Backend, model: nn.Module, adapter: str, scenario: Scenario) -> dict[str, torch.Tensor]:
    """Every tensor of one adapter (factors and modules_to_save copies), cloned, under its saved key."""
    return {k: v.detach().clone() for k, v in adapter_tensors(backend, model, adapter, scenario).items()}


def adapter_tensors(backend: Backend, model: nn.Module, adapter: str, scenario: Scenario) -> dict[str, torch.Tensor]:
    """One adapter's tensors as the backend holds them, keyed by the name peft's format gives them on disk."""
    kinds = module_kinds(scenario)
    holders = parameter_key_paths(scenario) if scenario.config.target_parameters else {}
    out: dict[str, torch.Tensor] = {}
    for path, (a, b) in backend.lora_factors(model, adapter).items():
        embedding = kinds.get(path) == "embedding"
        roles = ("lora_embedding_A", "lora_embedding_B") if embedding else ("lora_A", "lora_B")
        param = "" if embedding else "weight"
        out[AdapterKey(holders.get(path, path), roles[0], param).saved()] = a
        out[AdapterKey(holders.get(path, path), roles[1], param).saved()] = b
    for path, bias in backend.lora_biases(model, adapter).items():
        out[AdapterKey(path, "lora_B", "bias").saved()] = bias
    for path, magnitude in magnitudes(backend, model, adapter).items():
        out[AdapterKey(path, MAGNITUDE).saved()] = magnitude
    for path, state in backend.saved_copies(model, adapter).items():
        for k, v in state.items():
            out[AdapterKey(path, MODULES_TO_SAVE, k).saved()] = v
    for path, values in token_rows(backend, model, adapter).items():
        out[AdapterKey(path, TOKENS).saved()] = values
    return out


def token_rows(backend: Backend, model: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """Trainable token values of `adapter` by embedding path ({} for a backend without trainable tokens)."""
    return optional_methods(backend).token_rows(model, adapter) if "trainable_tokens" in backend.capabilities else {}


def module_kinds(scenario: Scenario) -> dict[str, LayerKind]:
    """Layer kind of every module of the scenario's base model, by path (built once per architecture)."""
    return _kinds_of(scenario.model.build)


@functools.lru_cache(maxsize=256)  # drawn trees are many; keep the cache bounded
def _kinds_of(build: Callable[[], nn.Module]) -> dict[str, LayerKind]:
    # Structure does not depend on seed, dtype or device, so snapshots of one scenario never rebuild the model.
    # Built with the global random state put back: a cache miss must not change what a check draws next.
    with torch.random.fork_rng(devices=[]):
        model = build()
    return {n: layer_kind(m)[0] for n, m in model.named_modules() if n}


def train_step(model: nn.Module, inputs: tuple, lr: float = 0.1) -> None:
    """One SGD step on every parameter that requires grad (loss: mean square of the output)."""
    params = [p for p in model.parameters() if p.requires_grad]
    expect(bool(params), "no parameter requires grad after wrapping: nothing would train")
    model.zero_grad(set_to_none=True)
    run(model, inputs).float().pow(2).mean().backward()
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.sub_(lr * p.grad)
    model.zero_grad(set_to_none=True)


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary directory (Hypothesis examples cannot use function-scoped fixtures such as tmp_path)."""
    with tempfile.TemporaryDirectory(prefix="loraguard-") as d:
        yield Path(d)


def read_saved(directory: Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved adapter directory, as written."""
    from safetensors.torch import load_file

    path = directory / WEIGHTS_NAME
    expect(path.exists(), f"{path} was not written by save")
    return load_file(str(path))
