"""Running one invariant inside a pytest test: skips become pytest skips, drawn failures leave a reproducer script."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from loraguard.backends import Backend
from loraguard.harness.scenarios import Scenario
from loraguard.harness.settings import Settings
from loraguard.harness.strategies import DrawnModel, scenarios
from loraguard.harness.zoo import ZOO
from loraguard.invariants.registry import Skipped, all_invariants, run_invariant

#: The reproducer written by the last failing drawn example in this process (the plugin attaches it to the report).
last_reproducer: Path | None = None


def check(invariant_id: str, backend: Backend, scenario: Scenario) -> None:
    """Run one invariant; a Skipped becomes a pytest skip with its reason."""
    try:
        run_invariant(all_invariants()[invariant_id], backend, scenario)
    except Skipped as why:
        pytest.skip(str(why))


def check_drawn(invariant_id: str, backend: Backend, settings: Settings, data) -> None:
    """Draw a scenario for this backend and run the invariant; on failure write a standalone reproducer."""
    from hypothesis import note

    global last_reproducer
    last_reproducer = None
    from hypothesis import reject

    scenario = data.draw(scenarios(backend.capabilities, tuple(settings.dtypes), settings.device), label="scenario")
    try:
        run_invariant(all_invariants()[invariant_id], backend, scenario)
    except Skipped as why:
        if why.per_example:
            reject()  # this example cannot decide; Hypothesis draws another
        pytest.skip(str(why))
    except Exception:
        last_reproducer = write_reproducer(invariant_id, backend, scenario, settings)
        note(f"reproducer: {last_reproducer}")
        raise


def write_reproducer(invariant_id: str, backend: Backend, scenario: Scenario, settings: Settings) -> Path:
    """A script that rebuilds the scenario and re-runs the one failing invariant (overwritten as Hypothesis shrinks)."""
    settings.reproducer_dir.mkdir(parents=True, exist_ok=True)
    path = settings.reproducer_dir / f"{invariant_id}-{re.sub(r'[^A-Za-z0-9_.-]', '_', backend.name)}.py"
    path.write_text(
        reproducer_source(
            invariant_id,
            backend,
            scenario,
            settings.model_origins.get(scenario.model.name),
            settings.backend_specs.get(backend.name, backend.name),
        )
    )
    return path


def reproducer_source(
    invariant_id: str, backend: Backend, scenario: Scenario, model_origin: str | None, backend_spec: str
) -> str:
    """Python source that replays one scenario against one backend."""
    imports = [
        "import torch",
        "",
        "from loraguard.backends import load_backend",
        "from loraguard.core.config import LoraConfig",
        "from loraguard.invariants.registry import Skipped, all_invariants, run_invariant",
        "from loraguard.harness.scenarios import Scenario",
    ]
    if isinstance(scenario.model, DrawnModel):
        imports.append("from loraguard.harness.strategies import TreeSpec, tree_zoo_model")
        model = f"tree_zoo_model(TreeSpec(leaves={scenario.model.spec.leaves!r}))"
    elif model_origin:
        module, _, factory = model_origin.partition(":")
        imports.append(f"from {module} import {factory}")
        model = f"{factory}()"
    elif scenario.model.name in ZOO:
        imports.append("from loraguard.harness.zoo import ZOO")
        model = f"ZOO[{scenario.model.name!r}]"
    else:
        raise ValueError(f"cannot rebuild model {scenario.model.name!r} in a reproducer")
    second = f"LoraConfig(**{_config_fields(scenario.second)!r})" if scenario.second else None
    return "\n".join(
        [
            f'"""loraguard reproducer: invariant {invariant_id!r} failed on backend {backend.name!r} '
            f"(release {backend.version()}).",
            "",
            "Run it with `python <this file>`: it raises the same violation until the library is fixed.",
            '"""',
            *imports,
            "",
            "scenario = Scenario(",
            f"    model={model},",
            f"    config=LoraConfig(**{_config_fields(scenario.config)!r}),",
            f"    second={second},",
            f"    dtype={scenario.dtype}, device={scenario.device!r}, seed={scenario.seed}, label={scenario.label!r},",
            ")",
            "try:",
            f"    run_invariant(all_invariants()[{invariant_id!r}], load_backend({backend_spec!r}), scenario)",
            "except Skipped as why:",
            '    print(f"skipped: {why}")',
            "else:",
            '    print("passed: the failure did not reproduce")',
            "",
        ]
    )


def _config_fields(config) -> dict:
    fields = dataclasses.asdict(config)
    fields.pop("extra", None)
    return fields
