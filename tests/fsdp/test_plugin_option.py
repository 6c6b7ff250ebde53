"""`pytest --loraguard --loraguard-fsdp N` runs every FSDP invariant through the plugin (one rank: the wiring is
under test here, the two-rank behaviour in tests/distributed/test_zero3_and_fsdp.py)."""

# pytester's in-process runs drop the modules they import; torch cannot be imported twice in one process.
import peft  # noqa: F401
import pytest

import loraguard.backends.peft  # noqa: F401
import loraguard.harness.settings  # noqa: F401
import loraguard.run.in_pytest  # noqa: F401
from loraguard.fsdp import invariant_ids

pytestmark = pytest.mark.fsdp


def test_every_fsdp_invariant_runs_and_passes_for_peft(pytester: pytest.Pytester) -> None:
    args = ["-p", "no:cacheprovider", "--loraguard", "--loraguard-backend", "peft", "--loraguard-fsdp", "1"]
    result = pytester.runpytest(*args, "-k", "test_fsdp", "-v")
    result.assert_outcomes(passed=len(invariant_ids()))
    result.stdout.fnmatch_lines([f"*test_fsdp[[]{i}-peft[]] PASSED*" for i in invariant_ids()], consecutive=False)
