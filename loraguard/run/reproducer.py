"""Reproducer scripts, one per failing test ID: the loraguard replay of the scenario, and where the backend can
write one (peft), a standalone script that imports only torch and the library."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from loraguard.backends import Backend
from loraguard.harness.scenarios import Scenario
from loraguard.harness.settings import Settings
from loraguard.harness.strategies import DrawnModel
from loraguard.harness.zoo import ZOO
from loraguard.invariants.registry import all_invariants

if TYPE_CHECKING:
    from loraguard.core.config import LoraConfig


def describe(scenario: Scenario) -> str:
    """A one-paragraph, readable account of a scenario: the model's leaves, the configs, dtype and seed."""
    if isinstance(scenario.model, DrawnModel) and scenario.model.spec is not None:
        spec = scenario.model.spec
        model = "tree " + ", ".join(f"{p} ({k})" for p, k in spec.leaves)
        if spec.embedding is not None:
            model += f" after embedding {spec.embedding}" + (
                f", head {spec.head} tied ({spec.tie})" if spec.head else ""
            )
    else:
        model = scenario.model.name
    parts = [f"model {model}", f"config {_short(scenario.config)}"]
    if scenario.second is not None:
        parts.append(f"second adapter {_short(scenario.second)}")
    parts.append(f"dtype {str(scenario.dtype).removeprefix('torch.')}, seed {scenario.seed}")
    return "; ".join(parts)


def _short(config: LoraConfig) -> str:
    """The config's fields that differ from the defaults."""
    defaults = type(config)()
    fields = {k: v for k, v in _config_fields(config).items() if v != getattr(defaults, k, None)}
    return "LoraConfig(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"


def safe_name(test_name: str) -> str:
    """A file name for a test ID: ``test_drawn[naming-peft]`` -> ``test_drawn-naming-peft``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-")


def write_reproducer(
    invariant_id: str, backend: Backend, scenario: Scenario, settings: Settings, test_name: str
) -> Path:
    """Write the reproducer of one failing test, named after its ID: the standalone script where the backend can
    write one and it fails as it should when run on its own, else the loraguard replay."""
    folder = settings.reproducer_dir
    if folder is None:
        raise ValueError("reproducers are off in these settings (--loraguard-reproducers off)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{safe_name(test_name)}.py"
    standalone = getattr(backend, "standalone_reproducer", None)
    source = None
    if standalone is not None:
        candidate = standalone(invariant_id, all_invariants()[invariant_id].promise, scenario)
        if candidate is not None and fails_on_its_own(candidate):
            source = candidate
    if source is None:
        source = reproducer_source(
            invariant_id,
            backend,
            scenario,
            settings.model_origins.get(scenario.model.name),
            settings.backend_specs.get(backend.name, backend.name),
        )
    path.write_text(source)
    return path


def fails_on_its_own(source: str, timeout: float = 300.0) -> bool:
    """Run a standalone script in a fresh interpreter, outside any project: does it end in an AssertionError?"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    with tempfile.TemporaryDirectory(prefix="loraguard-repro-") as d:
        script = Path(d) / "reproducer.py"
        script.write_text(source)
        try:
            done = subprocess.run(
                [sys.executable, str(script)], cwd=d, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return False
    return done.returncode != 0 and "AssertionError" in done.stderr


def reproducer_source(
    invariant_id: str, backend: Backend, scenario: Scenario, model_origin: str | None, backend_spec: str
) -> str:
    """Python source that replays one scenario against one backend through loraguard."""
    imports = [
        "import torch",
        "",
        "from loraguard.backends import load_backend",
        "from loraguard.core.config import LoraConfig",
        "from loraguard.invariants.registry import Skipped, all_invariants, run_invariant",
        "from loraguard.harness.scenarios import Scenario",
    ]
    if isinstance(scenario.model, DrawnModel) and scenario.model.spec is not None:
        imports.append("from loraguard.harness.strategies import TreeSpec, tree_zoo_model")
        model = f"tree_zoo_model({scenario.model.spec!r})"
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


def _config_fields(config: LoraConfig) -> dict:
    fields = dataclasses.asdict(config)
    fields.pop("extra", None)
    return fields
