"""One reference snapshot per session (three small zoo scenarios), copied for tests that change it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from loraguard.backends.reference import ReferenceBackend
from loraguard.gating.snapshot import take_snapshot
from loraguard.harness.zoo import available
from loraguard.harness.zoo_scenarios import zoo_scenarios

ZOO = ["mlp", "embedding", "nested"]


@pytest.fixture(scope="session")
def reference_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("baseline") / "snapshot"
    take_snapshot(ReferenceBackend(), zoo_scenarios(available(ZOO), [torch.float32]), directory)
    return directory


@pytest.fixture
def snapshot(reference_snapshot: Path, tmp_path: Path) -> Path:
    """A private copy of the reference snapshot, free to edit."""
    return Path(shutil.copytree(reference_snapshot, tmp_path / "snapshot"))
