"""`pytest --loraguard` as a user runs it: the suite, its summary, known failures, options, custom backends."""

import textwrap

# pytester's in-process runs drop the modules they import when they end, and torch cannot be imported twice in
# one process: load what the plugin imports up front so every run finds it already there.
import peft  # noqa: F401
import pytest

import loraguard.backends.peft  # noqa: F401
import loraguard.harness.settings  # noqa: F401
import loraguard.run.in_pytest  # noqa: F401
import tests.mutants  # noqa: F401
from loraguard.invariants.registry import all_invariants

all_invariants()

QUICK = ["-p", "no:cacheprovider", "--loraguard", "--loraguard-profile", "quick"]


def assert_green(result: pytest.RunResult) -> None:
    """Something ran and nothing failed (the counts of passes and skips depend on the backend)."""
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) > 0 and not outcomes.get("failed") and not outcomes.get("errors"), outcomes


def test_suite_runs_against_reference_and_prints_the_summary(pytester: pytest.Pytester) -> None:
    """Every kind of test (zoo, drawn, sequence) through the plugin. The zoo on mlp only: the reference's zoo rows
    on every model are checked in-process by tests/test_mutants.py (gpt2 alone cost this test half its time)."""
    result = pytester.runpytest(*QUICK, "--loraguard-backend", "reference", "--loraguard-zoo", "mlp")
    assert_green(result)
    result.stdout.fnmatch_lines(
        [
            "*loraguard summary (reference *; profile quick; *",
            "invariant*reference*",
            "merge-forward*passed*",
            "roundtrip*passed*",
        ]
    )


def test_a_mutant_fails_with_a_readable_test_id(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(
        *QUICK,
        "--loraguard-backend",
        "tests.mutants:ScalingDroppedAtMerge",
        "--loraguard-zoo",
        "mlp",
        "-k",
        "test_zoo and merge-forward and r4",  # the LoRA scenario (mlp's tuner scenarios skip on the reference)
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*test_zoo[[]merge-forward-mutant-no-scale-mlp-r4-f32[]]*", "*merge-forward*1 failed*"]
    )


def test_known_failures_become_strict_xfails(pytester: pytest.Pytester) -> None:
    known = pytester.makefile(".txt", known="naming[mutant-bare-suffix-nested-*]  # bare endswith, peft#1917\n")
    result = pytester.runpytest(
        *QUICK,
        "--loraguard-backend",
        "tests.mutants:BareSuffix",
        "--loraguard-zoo",
        "nested",
        "-k",
        "test_zoo and naming",
        f"--loraguard-known-failures={known}",
    )
    result.assert_outcomes(xfailed=1)


def test_a_fixed_known_failure_is_noticed(pytester: pytest.Pytester) -> None:
    known = pytester.makefile(".txt", known="merge-forward[reference-*]  # pretend it was broken\n")
    result = pytester.runpytest(
        *QUICK,
        "--loraguard-backend",
        "reference",
        "--loraguard-zoo",
        "mlp",
        "-k",
        "test_zoo and merge-forward and r4",
        f"--loraguard-known-failures={known}",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*XPASS(strict)*known failure: pretend it was broken*"])


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--loraguard-profile", "nightly", "--loraguard-profile"),
        ("--loraguard-dtype", "f8", "--loraguard-dtype"),
        ("--loraguard-backend", "no_such_library", "no_such_library"),
        ("--loraguard-model", "nomodule", "--loraguard-model"),
        ("--loraguard-known-failures", "missing.txt", "missing.txt"),
        ("--loraguard-fsdp", "two", "--loraguard-fsdp"),
        ("--loraguard-fsdp-api", "fsdp3", "--loraguard-fsdp-api"),
    ],
)
def test_bad_options_are_usage_errors_naming_the_option(pytester: pytest.Pytester, option, value, named) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--loraguard", option, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*loraguard:*{named}*"])


def test_user_model_and_ini_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        mymodels=textwrap.dedent("""
        import torch
        from torch import nn
        from loraguard.harness.zoo import ZooModel

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.encoder = nn.Linear(5, 7)
                self.decoder = nn.Linear(7, 5)
            def forward(self, x):
                return self.decoder(torch.relu(self.encoder(x)))

        def tiny():
            return ZooModel("mynet", Net, lambda g: (torch.randn(4, 5, generator=g),), ["encoder", "decoder"])
    """)
    )
    pytester.syspathinsert()  # the user's module must be importable, as with any pytest plugin option
    pytester.makeini("[pytest]\nloraguard_backend = reference\nloraguard_profile = quick\n")
    result = pytester.runpytest(  # the user's model only: the zoo's rows beside it are tests/test_mutants.py's
        "-p", "no:cacheprovider", "--loraguard", "--loraguard-model", "mymodels:tiny", "-k", "mynet", "-v"
    )
    assert_green(result)
    result.stdout.fnmatch_lines(
        [
            "*test_zoo[[]merge-forward-reference-mynet-r4-f32[]] PASSED*",
            "*loraguard summary (reference *; profile quick;*",
        ]
    )


def test_off_by_default_and_imports_no_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys
        def test_torch_not_loaded():
            assert "torch" not in sys.modules
    """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:hypothesispytest")
    result.assert_outcomes(passed=1)
    assert "loraguard summary" not in result.stdout.str()


def test_a_backend_declaring_an_unknown_capability_is_refused(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        typo_backend=textwrap.dedent("""
        from loraguard.backends.reference import ReferenceBackend

        class Typo(ReferenceBackend):
            name = "typo"
            capabilities = ReferenceBackend.capabilities | {"modules_to_saves"}
    """)
    )
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:cacheprovider", "--loraguard", "--loraguard-backend", "typo_backend:Typo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown capabilities*modules_to_saves*"])


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("raise RuntimeError('no config.json')", "importing brokenmodels raised RuntimeError: no config.json"),
        ("def tiny():\n    return {}['width']", "tiny() raised KeyError: 'width'"),
    ],
)
def test_a_user_model_that_raises_is_a_usage_error_saying_where(pytester: pytest.Pytester, source, said) -> None:
    pytester.makepyfile(brokenmodels=source)
    result = pytester.runpytest("-p", "no:cacheprovider", "--loraguard", "--loraguard-model", "brokenmodels:tiny")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    option = "--loraguard-model 'brokenmodels:tiny'"
    result.stderr.fnmatch_lines([f"ERROR: loraguard: {option}: {said} (brokenmodels.py:*)"])
    assert "Traceback" not in result.stderr.str()
