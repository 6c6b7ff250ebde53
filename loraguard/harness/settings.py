"""What a `pytest --loraguard` run checks: backends, device, dtypes, profile, models, known failures, baseline.

Resolved once per session from command-line options (which win) and ini values, by the plugin. Resolving imports
no torch unless it loads backends or the user's models: a pytest-xdist controller checks every option and starts
its workers without torch's seconds of import first.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from loraguard.backends import describe_backend, load_backend
from loraguard.core.imports import import_user_module
from loraguard.core.vocabulary import DTYPE_NAMES, FSDP_APIS
from loraguard.harness.known_failures import KnownFailure, builtin_files, read_known_failures
from loraguard.harness.zoo import ZooModel, available

if TYPE_CHECKING:
    import torch

    from loraguard.backends import Backend
    from loraguard.harness.scenarios import Scenario


@dataclass(frozen=True)
class Profile:
    """How much to run: which zoo models and dtypes by default, how many Hypothesis examples per property, and how
    long a failing drawn test may shrink (None: until Hypothesis is done)."""

    name: str
    zoo: tuple[str, ...] | None  # None: every zoo model whose dependencies import
    dtypes: tuple[str, ...]
    max_examples: int
    derandomize: bool
    shrink_seconds: float | None = None


#: Seconds a failing drawn test of the ci and quick profiles may spend shrinking (a red run costs about a green one).
SHRINK_SECONDS = 10.0

PROFILES = {
    "quick": Profile("quick", ("mlp", "nested", "gpt2"), ("f32",), 3, True, SHRINK_SECONDS),
    "ci": Profile("ci", None, ("f32", "bf16"), 8, True, SHRINK_SECONDS),
    "thorough": Profile("thorough", None, ("f32", "bf16", "f16"), 60, False, None),
}


@dataclass
class Settings:
    backends: list[Backend]  # empty where resolved without loading them (an xdist controller)
    versions: dict[str, str]  # backend name -> its library's release, for reports and known-failure sections
    device: str
    dtype_names: list[str]  # f32, bf16...: `dtypes` are torch's
    profile: Profile
    models: list[ZooModel]
    model_origins: dict[str, str] = field(default_factory=dict)  # model name -> "module:factory"
    backend_specs: dict[str, str] = field(default_factory=dict)  # backend name -> what --loraguard-backend said
    known_failures: list[KnownFailure] = field(default_factory=list)
    known_failure_files: list[Path] = field(default_factory=list)  # the files they came from, builtin ones first
    shrink_seconds: float | None = None
    reproducer_dir: Path | None = Path(".loraguard/reproducers")  # None: no reproducers written
    baseline: Path | None = None
    update_baseline: bool = False
    zero3: int = 0
    fsdp: int = 0
    fsdp_api: str = "fsdp2"

    @property
    def dtypes(self) -> list[torch.dtype]:
        from loraguard.harness.scenarios import DTYPES

        return [DTYPES[name] for name in self.dtype_names]

    @property
    def scenarios(self) -> list[Scenario]:
        from loraguard.harness.zoo_scenarios import profile_scenarios

        return profile_scenarios(self.models, self.dtypes, self.device)

    def known_failure(self, name: str) -> KnownFailure | None:
        return next((k for k in self.known_failures if k.matches(name)), None)

    def known_failures_of(self, name: str) -> list[KnownFailure]:
        """Every entry whose glob matches test `name` (several known bugs may share a test, told by message)."""
        return [k for k in self.known_failures if k.matches(name)]


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
    known_failures: list[str] = field(default_factory=list)
    builtin_known_failures: bool = True
    shrink: str | None = None  # "full" or seconds; None: the profile's
    reproducer_dir: Path | None = Path(".loraguard/reproducers")  # None: no reproducers written
    baseline: str | None = None
    update_baseline: bool = False
    zero3: int = 0
    fsdp: int = 0
    fsdp_api: str = "fsdp2"
    prefix: str = "--loraguard-"
    import_roots: tuple[Path, ...] = ()  # searched for module:attr after the working directory (pytest's rootdir)

    def option(self, name: str) -> str:
        """How the user spells option `name` (``model`` -> ``--loraguard-model`` or ``--model``)."""
        return f"{self.prefix}{name}"


def _raised(err: BaseException) -> str:
    """``Type: message (file:line)``, the line being where the user's code raised it."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{where}"


def load_model(spec: str, option: str, roots: tuple[Path, ...] = ()) -> ZooModel:
    """A user model from ``module:factory`` (found as pytest would: also from the working directory and `roots`);
    the factory returns a loraguard.harness.zoo.ZooModel. Errors start with `option`, as the user wrote it."""
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise ValueError(f"{option} {spec!r}: use 'module:factory' (a function returning a ZooModel)")
    try:
        factory = getattr(import_user_module(module_name, roots), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{option} {spec!r}: {err}") from err
    except Exception as err:  # the user's module failed: say where, with no traceback through loraguard
        raise ValueError(f"{option} {spec!r}: importing {module_name} raised {_raised(err)}") from err
    try:
        model = factory()
    except Exception as err:
        raise ValueError(f"{option} {spec!r}: {attr}() raised {_raised(err)}") from err
    if not isinstance(model, ZooModel):
        raise ValueError(f"{option} {spec!r} returned {type(model).__name__}, not loraguard.harness.zoo.ZooModel")
    return model


def resolve(opts: RunOptions, load_backends: bool = True) -> Settings:
    """Build Settings from option values, with an error naming the option for anything unusable. Without
    `load_backends`, built-in backends are only named and their releases read (what reports need): a pytest-xdist
    controller runs no test, and importing peft there would cost every ``-n`` run seconds before workers start."""
    if opts.profile not in PROFILES:
        raise ValueError(f"{opts.option('profile')} {opts.profile!r}: choose one of {sorted(PROFILES)}")
    prof = PROFILES[opts.profile]
    device = opts.device
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"{opts.option('device')} {device!r}: use cpu, cuda or cuda:N")
    if device.startswith("cuda") and not _cuda_available():
        raise ValueError(f"{opts.option('device')} {device}: torch sees no CUDA device here")
    if opts.fsdp_api not in FSDP_APIS:
        raise ValueError(f"{opts.option('fsdp-api')} {opts.fsdp_api!r}: choose one of {list(FSDP_APIS)}")
    names = opts.dtypes or list(prof.dtypes)
    unknown = [d for d in names if d not in DTYPE_NAMES]
    if unknown:
        raise ValueError(f"{opts.option('dtype')} {unknown}: choose from {sorted(DTYPE_NAMES)}")
    user = {spec: load_model(spec, opts.option("model"), opts.import_roots) for spec in opts.models}
    zoo = opts.zoo
    if zoo == ["none"]:  # the user's models alone
        if not user:
            raise ValueError(f"{opts.option('zoo')} none: give your models with {opts.option('model')}")
        chosen = []
    else:
        try:
            chosen = available(zoo or (list(prof.zoo) if prof.zoo else None))
        except ValueError as err:
            raise ValueError(f"{opts.option('zoo')}: {err}") from None
    clash = sorted({m.name for m in chosen} & {m.name for m in user.values()})
    if clash:
        raise ValueError(f"{opts.option('model')}: {clash} named like built-in models; rename them")
    loaded = {spec: load_backend(spec) for spec in opts.backends} if load_backends else {}
    described = {spec: (b.name, b.version()) for spec, b in loaded.items()} or {
        spec: describe_backend(spec) for spec in opts.backends
    }
    versions = dict(described.values())
    files = builtin_files(list(versions)) if opts.builtin_known_failures else []
    files += [Path(f) for f in opts.known_failures]
    known: dict[tuple[str, str], KnownFailure] = {}  # one entry per pattern and message: the first file wins
    for path in files:
        for entry in read_known_failures(path, versions, opts.option("known-failures")):
            known.setdefault((entry.pattern, entry.message), entry)
    return Settings(
        backends=list(loaded.values()),
        versions=versions,
        backend_specs={name: spec for spec, (name, _) in described.items()},
        device=device,
        dtype_names=list(names),
        profile=prof,
        models=chosen + list(user.values()),
        model_origins={m.name: spec for spec, m in user.items()},
        known_failures=list(known.values()),
        known_failure_files=files,
        shrink_seconds=_shrink_seconds(opts, prof),
        reproducer_dir=opts.reproducer_dir,
        baseline=Path(opts.baseline) if opts.baseline else None,
        update_baseline=opts.update_baseline,
        zero3=opts.zero3,
        fsdp=opts.fsdp,
        fsdp_api=opts.fsdp_api,
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _shrink_seconds(opts: RunOptions, prof: Profile) -> float | None:
    """The shrink budget per failing drawn test: the option's (``full`` or seconds), else the profile's."""
    if opts.shrink is None:
        return prof.shrink_seconds
    if opts.shrink == "full":
        return None
    try:
        seconds = float(opts.shrink)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise ValueError(f"{opts.option('shrink')} {opts.shrink!r}: use 'full' or a number of seconds above 0")
    return seconds
