"""pytest plugin: ``pytest --loraguard`` runs loraguard's invariants against PEFT-style libraries.

Registered through the ``pytest11`` entry point. Without ``--loraguard`` it only adds its options: nothing
heavy is imported (no torch), so it costs a plain pytest run nothing. Per-session state lives in
``config.stash``; the end-of-run table is built from reports, so it works under xdist too.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections import Counter, defaultdict
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import pytest

if TYPE_CHECKING:  # the plugin imports neither torch nor the harness until --loraguard is given
    from _pytest.terminal import TerminalReporter
    from pluggy import Result

    from loraguard.harness.settings import Settings
    from loraguard.run.in_pytest import RunExtras

SETTINGS = pytest.StashKey["Settings"]()
#: user_properties keys a loraguard test's report carries (they travel from xdist workers to the controller).
_TAG, _REPRO_TAG, _KNOWN_TAG, _EXTRA_TAG = "loraguard", "loraguard-reproducer", "loraguard-known", "loraguard-extra"

#: (name, ini type, default, help); each is also an ini key loraguard_<name>
_OPTIONS: list[tuple[str, Literal["args", "string"], object, str]] = [
    ("backend", "args", [], "backend(s) to check: reference, peft, an entry-point name, or module:attr (repeatable)"),
    ("device", "string", "cpu", "device for models: cpu, cuda or cuda:N"),
    ("dtype", "args", [], "dtype(s): f32, bf16, f16, f64 (repeatable; default from the profile)"),
    ("profile", "string", "ci", "quick, ci (derandomized, the default) or thorough"),
    ("zoo", "args", [], "built-in tiny models to use (default: the profile's; 'none': only --loraguard-model's)"),
    ("model", "args", [], "your model, module:factory returning a loraguard.harness.zoo.ZooModel, added to the zoo"),
    ("known-failures", "args", [], "your own known-failures file (repeatable), in the format of the builtin ones"),
    ("builtin-known-failures", "string", "on", "on (default): the known bugs shipped for the installed release; off"),
    ("shrink", "string", None, "full, or seconds a failing drawn test may shrink (default: the profile's)"),
    ("reproducers", "string", ".loraguard/reproducers", "where each failing test's reproducer is written; off: none"),
    ("baseline", "string", None, "compare against a snapshot taken with `loraguard snapshot` (upgrade gating)"),
    ("zero3", "string", "0", "also run the ZeRO-3 invariants on N DeepSpeed ranks"),
    ("fsdp", "string", "0", "also run the PyTorch FSDP invariants on N ranks (gloo on CPU, NCCL on CUDA)"),
    ("fsdp-api", "string", "fsdp2", "FSDP API for --loraguard-fsdp: fsdp2 (fully_shard) or fsdp1 (use_orig_params)"),
]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loraguard", "loraguard: verify LoRA libraries")
    group.addoption("--loraguard", action="store_true", help="run loraguard's invariants (its properties suite)")
    for name, kind, default, help_text in _OPTIONS:
        repeat = kind == "args"
        group.addoption(
            f"--loraguard-{name}",
            action="append" if repeat else "store",
            default=None,
            dest=f"loraguard_{name.replace('-', '_')}",
            help=help_text,
        )
        parser.addini(f"loraguard_{name.replace('-', '_')}", help_text, type=kind, default=default)
    group.addoption(
        "--loraguard-update-baseline",
        action="store_true",
        help="rewrite the --loraguard-baseline snapshot with this run's results instead of comparing",
    )


def _option(config: pytest.Config, name: str) -> Any:
    key = f"loraguard_{name.replace('-', '_')}"
    value = config.getoption(key)
    return value if value is not None else config.getini(key)


def _count(config: pytest.Config, name: str) -> int:
    """A rank count option: a whole number >= 0, else a usage error naming the option."""
    value = _option(config, name)
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise pytest.UsageError(f"loraguard: --loraguard-{name} {value!r}: give a number of ranks (0 to skip)")
    return count


def _reproducer_dir(config: pytest.Config) -> Path | None:
    """Where reproducers go; None for ``off`` (a run that wants only outcomes: each standalone reproducer is
    confirmed in a fresh interpreter, seconds to a minute per failing test)."""
    value = _option(config, "reproducers")
    return None if str(value).lower() == "off" else config.invocation_params.dir / value


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "loraguard(invariant_id): a test of one loraguard invariant")
    if not config.getoption("loraguard"):
        return
    from loraguard.frontends.xdist_errors import ControllerRelay, WorkerUsageError
    from loraguard.harness.settings import RunOptions, resolve

    backends = _option(config, "backend") or ["reference"] + (["peft"] if importlib.util.find_spec("peft") else [])
    builtin = str(_option(config, "builtin-known-failures")).lower()
    if builtin not in ("on", "off"):
        raise pytest.UsageError(f"loraguard: --loraguard-builtin-known-failures {builtin!r}: use on or off")
    controller = _is_xdist_controller(config)
    try:
        settings = resolve(
            RunOptions(
                backends=backends,
                device=_option(config, "device"),
                dtypes=_option(config, "dtype"),
                profile=_option(config, "profile"),
                zoo=_option(config, "zoo"),
                models=_option(config, "model"),
                known_failures=_option(config, "known-failures"),
                builtin_known_failures=builtin == "on",
                shrink=_option(config, "shrink"),
                reproducer_dir=_reproducer_dir(config),
                baseline=_option(config, "baseline"),
                update_baseline=config.getoption("loraguard_update_baseline"),
                zero3=_count(config, "zero3"),
                fsdp=_count(config, "fsdp"),
                fsdp_api=_option(config, "fsdp-api"),
                import_roots=(config.rootpath,),
            ),
            load_backends=not controller,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        if hasattr(config, "workerinput"):  # the controller says it, once (loraguard.frontends.xdist_errors)
            config.pluginmanager.register(WorkerUsageError(config, f"loraguard: {err}"), "loraguard-usage-error")
            return
        raise pytest.UsageError(f"loraguard: {err}") from None
    if controller:
        config.pluginmanager.register(ControllerRelay(), "loraguard-worker-errors")
    config.stash[SETTINGS] = settings
    config.pluginmanager.register(LoraguardRun(config, settings), "loraguard-run")
    spec = importlib.util.find_spec("loraguard.properties")
    if spec is None or spec.origin is None:
        raise pytest.UsageError("loraguard: its properties suite (loraguard.properties) is not installed")
    suite = str(Path(spec.origin).parent)
    if suite not in config.args:
        config.args.append(suite)  # added beside what the user asked for, never instead of it


def _is_xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands tests to pytest-xdist workers and runs none itself: xdist's own test (a
    distribution mode with nodes to send to, e.g. ``-n 2``; ``-n 0`` and ``--collect-only`` run here)."""
    return (
        not hasattr(config, "workerinput")
        and config.pluginmanager.hasplugin("xdist")
        and config.getoption("dist", "no") != "no"
        and bool(config.getoption("tx", None))
        and not config.getoption("collectonly")
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """One line saying what this loraguard run checks (backends and releases, torch, profile, device)."""
    settings = config.stash.get(SETTINGS, None)
    if settings is None:
        return []
    from importlib.metadata import version

    backends = ", ".join(f"{name} {release}" for name, release in settings.versions.items())
    known = f"{len(settings.known_failures)} known failures from " + (
        ", ".join(p.name for p in settings.known_failure_files) or "no file"
    )
    return [
        f"loraguard: {backends}; torch {version('torch')}; profile {settings.profile.name}; "
        f"device {settings.device}; {known}"
    ]


@pytest.fixture(scope="session")
def lg_settings(request: pytest.FixtureRequest) -> Settings:
    """The resolved loraguard settings of this run (backends, dtypes, models, profile...)."""
    settings = request.config.stash.get(SETTINGS, None)
    if settings is None:
        pytest.skip("loraguard properties run with `pytest --loraguard`")
    return settings


@pytest.hookimpl(trylast=True)  # after @parametrize, so ids read <invariant>-<backend>-<scenario>
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = metafunc.config.stash.get(SETTINGS, None)
    for name in ("lg_backend", "lg_scenario"):
        if name not in metafunc.fixturenames:
            continue
        if settings is None:
            metafunc.parametrize(name, [pytest.param(None, marks=pytest.mark.skip(reason="needs --loraguard"))])
        elif name == "lg_backend":
            metafunc.parametrize(name, settings.backends, ids=[b.name for b in settings.backends])
        else:
            metafunc.parametrize(name, settings.scenarios, ids=[s.id for s in settings.scenarios])


def canonical_name(item: pytest.Item) -> tuple[str, str, str] | None:
    """(invariant, backend, "invariant[backend-scenario]") for a loraguard test, else None."""
    marker = item.get_closest_marker("loraguard")
    callspec = getattr(item, "callspec", None)
    if marker is None or callspec is None or callspec.params.get("lg_backend") is None:
        return None
    backend = callspec.params["lg_backend"].name
    invariant = marker.args[0] if marker.args else item.name
    scenario = callspec.params.get("lg_scenario")
    where = scenario.id if scenario is not None else "drawn"
    return invariant, backend, f"{invariant}[{backend}-{where}]"


class LoraguardRun:
    """The hooks of an active ``--loraguard`` run, registered only then; holds the run's outcomes."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config, self.settings = config, settings
        self.outcomes: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.reproducers: list[tuple[str, str]] = []
        self.known_met: set[str] = set()
        self.skips: Counter[str] = Counter()
        self.partial: Counter[str] = Counter()
        self.example_skips: Counter[str] = Counter()
        self.warnings: Counter[str] = Counter()

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        from loraguard.run.in_pytest import KNOWN, KnownFailureMet

        for item in items:
            named = canonical_name(item)
            if named is None:
                continue
            invariant, backend, name = named
            item.user_properties.append((_TAG, (invariant, backend)))
            known = self.settings.known_failures_of(name)
            if known:
                # Zoo scenarios are fixed: a fix upstream must be noticed (strict). Drawn examples differ by profile
                # and seed, so a drawn entry is non-strict: an xpass there is no news. Where every entry names its
                # message, only a failure one of them explains is the xfail; any other failure is reported.
                strict = not name.endswith("-drawn]")
                told = all(k.message for k in known)
                reason = "; ".join(dict.fromkeys(k.reason for k in known))
                raises = KnownFailureMet if told else None
                item.add_marker(pytest.mark.xfail(reason=f"known failure: {reason}", strict=strict, raises=raises))
                item.stash[KNOWN] = known if told else []
                item.user_properties.append((_KNOWN_TAG, known[0].source))  # file:line, one per entry

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Result[None], None]:
        """Around a loraguard test only: one torch thread under xdist, and the library's warnings counted."""
        if not any(k == _TAG for k, _ in item.user_properties):
            yield
            return
        import torch

        from loraguard.run import in_pytest as runner

        runner.take_extras()  # nothing left from an earlier test
        threads = torch.get_num_threads()
        if os.environ.get("PYTEST_XDIST_WORKER"):  # one process per core already: intra-op threads only contend
            torch.set_num_threads(1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                torch.set_num_threads(threads)
        seen = Counter(f"{w.category.__name__}: {str(w.message).splitlines()[0][:160]}" for w in caught)
        if seen:
            runner.CURRENT["warnings"] = dict(seen)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo
    ) -> Generator[None, Result[pytest.TestReport], None]:
        report = (yield).get_result()
        if report.when != "call" or not any(k == _TAG for k, _ in item.user_properties):
            return
        from loraguard.run import in_pytest as runner

        extra = runner.take_extras()  # never carried over to another test
        if extra:
            report.user_properties.append((_EXTRA_TAG, extra))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        # what pytest_collection_modifyitems and pytest_runtest_makereport stored (a tuple arrives as a list from xdist)
        tag = cast("Sequence[str] | None", props.get(_TAG))
        if tag is None or not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        extra = cast("RunExtras", props.get(_EXTRA_TAG) or {})
        if hasattr(report, "wasxfail"):
            # an xfail met is a known bug of this release; a strict xpass fails: the known failure was fixed
            state = "xfailed" if report.skipped else "passed" if report.passed else "failed"
            if report.skipped:
                self.known_met.add(str(extra.get("known") or props.get(_KNOWN_TAG, "")))
        else:
            state = "passed" if report.passed else "skipped" if report.skipped else "failed"
        if state == "passed" and extra.get("partial"):
            state = "partial"
            self.partial[f"{tag[1]}: {extra['partial']}"] += 1
        if state == "skipped" and isinstance(report.longrepr, tuple):
            self.skips[f"{tag[1]}: {str(report.longrepr[2]).removeprefix('Skipped: ')}"] += 1
        self.outcomes[(tag[0], tag[1])][state] += 1
        self.warnings.update(extra.get("warnings", {}))
        for reason, count in (extra.get("examples_skipped") or {}).items():
            self.example_skips[f"{tag[1]}: {reason}"] += count
        if extra.get("reproducer") and state == "failed":
            self.reproducers.append((report.nodeid, extra["reproducer"]))

    def pytest_terminal_summary(self, terminalreporter: TerminalReporter) -> None:
        from loraguard.run.summary import render_details, render_table

        relay = self.config.pluginmanager.get_plugin("loraguard-worker-errors")
        if relay is not None and relay.message is not None:
            return  # no test ran: the workers' usage error says why

        header = ", ".join(f"{name} {release}" for name, release in self.settings.versions.items())
        shrink = self.settings.shrink_seconds
        budget = "shrink full" if shrink is None else f"shrink <= {shrink:g} s per failing drawn test"
        terminalreporter.write_sep("=", f"loraguard summary ({header}; profile {self.settings.profile.name}; {budget})")
        terminalreporter.write_line(render_table(self.outcomes, list(self.settings.versions)))
        listed = len(self.settings.known_failures)
        met = len(self.known_met - {""})
        files = ", ".join(p.name for p in self.settings.known_failure_files) or "none"
        lines = [f"known bugs of the installed releases met: {met} of {listed} listed (files: {files})"]
        lines += render_details(
            [
                ("skipped (backend's reason: tests)", self.skips),
                ("partial (first part held, then: tests)", self.partial),
                ("drawn examples skipped (reason: examples)", self.example_skips),
                ("library warnings (not printed per test: count)", self.warnings),
            ]
        )
        lines += [f"reproducer for {nodeid}: {path}" for nodeid, path in self.reproducers]
        for line in lines:
            terminalreporter.write_line(line)
