"""What a `pytest --loraguard` run checks: backends, device, dtypes, profile, models, known failures, baseline.

Resolved once per session from command-line options (which win) and ini values, by the plugin.
"""

from __future__ import annotations

import fnmatch
import importlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from loraguard.backends import Backend, load_backend
from loraguard.harness.scenarios import DTYPES, Scenario, zoo_scenarios
from loraguard.harness.zoo import ZooModel, available


@dataclass(frozen=True)
class Profile:
    """How much to run: which zoo models and dtypes by default, and how many Hypothesis examples per property."""

    name: str
    zoo: tuple[str, ...] | None  # None: every zoo model whose dependencies import
    dtypes: tuple[str, ...]
    max_examples: int
    derandomize: bool


PROFILES = {
    "quick": Profile("quick", ("mlp", "nested", "gpt2"), ("f32",), 3, True),
    "ci": Profile("ci", None, ("f32", "bf16"), 8, True),
    "thorough": Profile("thorough", None, ("f32", "bf16", "f16"), 60, False),
}


@dataclass(frozen=True)
class KnownFailure:
    """One line of a known-failures file: a glob over ``invariant[backend-scenario]`` and why it fails."""

    pattern: str
    reason: str

    def matches(self, name: str) -> bool:
        """`*` and `?` are wildcards; brackets are literal, since every name has them."""
        literal = "".join("[[]" if c == "[" else "[]]" if c == "]" else c for c in self.pattern)
        return fnmatch.fnmatchcase(name, literal)


@dataclass
class Settings:
    backends: list[Backend]
    device: str
    dtypes: list[torch.dtype]
    profile: Profile
    models: list[ZooModel]
    model_origins: dict[str, str] = field(default_factory=dict)  # model name -> "module:factory"
    backend_specs: dict[str, str] = field(default_factory=dict)  # backend name -> what --loraguard-backend said
    known_failures: list[KnownFailure] = field(default_factory=list)
    reproducer_dir: Path = Path(".loraguard/reproducers")
    baseline: Path | None = None
    update_baseline: bool = False
    zero3: int = 0

    @property
    def scenarios(self) -> list[Scenario]:
        return zoo_scenarios(self.models, self.dtypes, self.device)

    def known_failure(self, name: str) -> KnownFailure | None:
        return next((k for k in self.known_failures if k.matches(name)), None)


def read_known_failures(path: Path) -> list[KnownFailure]:
    """Parse a known-failures file: ``pattern  # reason`` per line; blank lines and ``#`` lines are ignored."""
    if not path.is_file():
        raise FileNotFoundError(f"--loraguard-known-failures: {path} does not exist")
    out = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        pattern, _, reason = line.partition("#")
        pattern = pattern.strip()
        if not pattern:
            continue
        if " " in pattern:
            raise ValueError(f"{path}:{number}: a pattern has no spaces; put the reason after '#': {line!r}")
        out.append(KnownFailure(pattern, reason.strip() or f"listed in {path.name}"))
    return out


@dataclass(frozen=True)
class RunOptions:
    """The options a run is resolved from, as the user gave them; `prefix` is how the user spells them in errors
    (``--loraguard-`` for the plugin, ``--`` for the ``loraguard`` command)."""

    backends: list[str]
    device: str = "cpu"
    dtypes: list[str] = field(default_factory=list)
    profile: str = "ci"
    zoo: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    known_failures: str | None = None
    reproducer_dir: Path = Path(".loraguard/reproducers")
    baseline: str | None = None
    update_baseline: bool = False
    zero3: int = 0
    prefix: str = "--loraguard-"

    def option(self, name: str) -> str:
        """How the user spells option `name` (``model`` -> ``--loraguard-model`` or ``--model``)."""
        return f"{self.prefix}{name}"


def load_model(spec: str, option: str = "--loraguard-model") -> ZooModel:
    """A user model from ``module:factory``; the factory returns a loraguard.harness.zoo.ZooModel."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"{option} {spec!r}: use 'module:factory' (a function returning a ZooModel)")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{option} {spec!r}: {err}") from err
    model = factory()
    if not isinstance(model, ZooModel):
        raise ValueError(f"{option} {spec!r} returned {type(model).__name__}, not loraguard.harness.zoo.ZooModel")
    return model


def resolve(opts: RunOptions) -> Settings:
    """Build Settings from option values, with an error naming the option for anything unusable."""
    if opts.profile not in PROFILES:
        raise ValueError(f"{opts.option('profile')} {opts.profile!r}: choose one of {sorted(PROFILES)}")
    prof = PROFILES[opts.profile]
    device = opts.device
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"{opts.option('device')} {device!r}: use cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{opts.option('device')} {device}: torch sees no CUDA device here")
    names = opts.dtypes or list(prof.dtypes)
    unknown = [d for d in names if d not in DTYPES]
    if unknown:
        raise ValueError(f"{opts.option('dtype')} {unknown}: choose from {sorted(DTYPES)}")
    user = {spec: load_model(spec, opts.option("model")) for spec in opts.models}
    zoo = opts.zoo
    chosen = available(zoo or (list(prof.zoo) if prof.zoo else None)) if (zoo or not user) else []
    loaded = {spec: load_backend(spec) for spec in opts.backends}
    return Settings(
        backends=list(loaded.values()),
        backend_specs={b.name: spec for spec, b in loaded.items()},
        device=device,
        dtypes=[DTYPES[d] for d in names],
        profile=prof,
        models=chosen + list(user.values()),
        model_origins={m.name: spec for spec, m in user.items()},
        known_failures=read_known_failures(Path(opts.known_failures)) if opts.known_failures else [],
        reproducer_dir=opts.reproducer_dir,
        baseline=Path(opts.baseline) if opts.baseline else None,
        update_baseline=opts.update_baseline,
        zero3=opts.zero3,
    )
