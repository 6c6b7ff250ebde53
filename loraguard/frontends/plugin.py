"""pytest plugin: ``pytest --loraguard`` runs loraguard's invariants against PEFT-style libraries.

Registered through the ``pytest11`` entry point. Without ``--loraguard`` it only adds its options: nothing
heavy is imported (no torch), so it costs a plain pytest run nothing. Per-session state lives in
``config.stash``; the end-of-run table is built from reports, so it works under xdist too.
"""

from __future__ import annotations

import importlib.util
import os
from collections import Counter, defaultdict
from pathlib import Path

import pytest

SETTINGS = pytest.StashKey[object]()
_TAG, _REPRO_TAG = "loraguard", "loraguard-reproducer"

_OPTIONS = [  # (name, ini type, default, help); each is also an ini key loraguard_<name>
    ("backend", "args", [], "backend(s) to check: reference, peft, an entry-point name, or module:attr (repeatable)"),
    ("device", "string", "cpu", "device for models: cpu, cuda or cuda:N"),
    ("dtype", "args", [], "dtype(s): f32, bf16, f16, f64 (repeatable; default from the profile)"),
    ("profile", "string", "ci", "quick, ci (derandomized, the default) or thorough"),
    ("zoo", "args", [], "built-in tiny models to use (default: the profile's)"),
    ("model", "args", [], "your own model as module:factory returning a loraguard.harness.zoo.ZooModel (repeatable)"),
    ("known-failures", "string", None, "file of known failures: glob patterns over invariant[backend-scenario]"),
    ("reproducers", "string", ".loraguard/reproducers", "where failing drawn examples are written as scripts"),
    ("baseline", "string", None, "compare against a snapshot taken with `loraguard snapshot` (upgrade gating)"),
    ("zero3", "string", "0", "also run the ZeRO-3 invariants on N DeepSpeed ranks"),
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


def _option(config: pytest.Config, name: str):
    key = f"loraguard_{name.replace('-', '_')}"
    value = config.getoption(key)
    return value if value is not None else config.getini(key)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "loraguard(invariant_id): a test of one loraguard invariant")
    if not config.getoption("loraguard"):
        return
    from loraguard.harness.settings import RunOptions, resolve

    backends = _option(config, "backend") or ["reference"] + (["peft"] if importlib.util.find_spec("peft") else [])
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
                reproducer_dir=config.invocation_params.dir / _option(config, "reproducers"),
                baseline=_option(config, "baseline"),
                update_baseline=config.getoption("loraguard_update_baseline"),
                zero3=int(_option(config, "zero3")),
            )
        )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise pytest.UsageError(f"loraguard: {err}") from None
    config.stash[SETTINGS] = settings
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one process per core already: intra-op threads only contend
        import torch

        torch.set_num_threads(1)
    config.pluginmanager.register(LoraguardRun(config, settings), "loraguard-run")
    _load_hypothesis_profile(settings.profile)
    suite = str(Path(importlib.util.find_spec("loraguard.properties").origin).parent)
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = [suite]  # no paths given: run the loraguard suite alone
    elif suite not in config.args:
        config.args.append(suite)


def _load_hypothesis_profile(profile) -> None:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        f"loraguard-{profile.name}",
        max_examples=profile.max_examples,
        derandomize=profile.derandomize,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    settings.load_profile(f"loraguard-{profile.name}")


@pytest.fixture(scope="session")
def lg_settings(request: pytest.FixtureRequest):
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

    def __init__(self, config: pytest.Config, settings) -> None:
        self.config, self.settings = config, settings
        self.outcomes: dict[tuple[str, str], Counter] = defaultdict(Counter)
        self.reproducers: list[tuple[str, str]] = []

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            named = canonical_name(item)
            if named is None:
                continue
            invariant, backend, name = named
            item.user_properties.append((_TAG, (invariant, backend)))
            known = self.settings.known_failure(name)
            if known is not None:
                item.add_marker(pytest.mark.xfail(reason=f"known failure: {known.reason}", strict=True))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = (yield).get_result()
        from loraguard.run import in_pytest as runner

        if report.when == "call":
            if report.failed and runner.last_reproducer is not None:
                report.user_properties.append((_REPRO_TAG, str(runner.last_reproducer)))
            runner.last_reproducer = None  # never carried over to another test

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        tag = props.get(_TAG)
        if tag is None or not (report.when == "call" or (report.when == "setup" and not report.passed)):
            return
        if hasattr(report, "wasxfail"):
            state = "xfailed" if report.skipped else "failed"  # a strict xpass fails: the known failure was fixed
        else:
            state = "passed" if report.passed else "skipped" if report.skipped else "failed"
        self.outcomes[tuple(tag)][state] += 1
        if props.get(_REPRO_TAG):
            self.reproducers.append((report.nodeid, props[_REPRO_TAG]))

    def pytest_terminal_summary(self, terminalreporter) -> None:
        from loraguard.run.summary import render_table

        header = ", ".join(f"{b.name} {b.version()}" for b in self.settings.backends)
        terminalreporter.write_sep("=", f"loraguard summary ({header}; profile {self.settings.profile.name})")
        terminalreporter.write_line(render_table(self.outcomes, [b.name for b in self.settings.backends]))
        for nodeid, path in self.reproducers:
            terminalreporter.write_line(f"reproducer for {nodeid}: {path}")
