"""What a user sees when something fails or cannot run: short messages, one reproducer per failing test ID,
skips with the backend's reason (never a Hypothesis error), partial coverage reported as such."""

import textwrap

import pytest

from tests.plugin.test_plugin import QUICK

MUTANT = [*QUICK, "--loraguard-backend", "tests.mutants:ScalingDroppedAtMerge", "--loraguard-zoo", "mlp"]


def test_each_failing_test_gets_its_own_reproducer_and_a_short_message(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*MUTANT, "--loraguard-shrink", "2", "-k", "merge-forward or merge-unmerge")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 3, outcomes
    out = result.stdout.str()
    listed = [line.split(": ", 1)[1] for line in result.stdout.lines if line.startswith("reproducer for ")]
    assert len(listed) == outcomes["failed"] == len(set(listed)), listed
    for name in ("test_drawn-merge-forward-mutant-no-scale.py", "test_zoo-merge-forward-mutant-no-scale-mlp-r4-f32.py"):
        assert any(p.endswith(name) for p in listed), (name, listed)
        assert (pytester.path / ".loraguard" / "reproducers" / name).is_file()
    result.stdout.fnmatch_lines(
        [
            "*loraguard invariant 'merge-forward' violated by mutant-no-scale *",
            "*after merge: merged weight of * vs W + s*B@A*",
            "minimal example: model tree *; config LoraConfig(*",
            "*shrunk for at most 2 s*",
        ]
    )
    assert "Falsifying example" not in out and "hypothesis.errors" not in out
    assert "loraguard/invariants/" not in out  # loraguard's own frames are hidden


UNSUPPORTED = textwrap.dedent("""
    from loraguard.backends.base import Unsupported
    from loraguard.backends.reference import ReferenceBackend

    class NoWrap(ReferenceBackend):
        name = "nowrap"
        def wrap(self, base, config, adapter="default"):
            raise Unsupported("this release cannot wrap these models")

    class NoSave(ReferenceBackend):
        name = "nosave"
        def save(self, model, directory, adapters=None):
            raise Unsupported("this release cannot save")
""")


def test_a_backend_that_cannot_run_a_scenario_skips_with_its_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(limited=UNSUPPORTED)
    pytester.syspathinsert()
    result = pytester.runpytest(*QUICK, "--loraguard-backend", "limited:NoWrap", "-k", "test_drawn and merge", "-rs")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 2 and not outcomes.get("failed"), outcomes
    assert "Unsatisfiable" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*nowrap: no drawn example could run (* skipped): this release cannot wrap*"])


def test_a_check_whose_second_half_is_unsupported_is_partial(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(limited=UNSUPPORTED)
    pytester.syspathinsert()
    result = pytester.runpytest(
        *QUICK, "--loraguard-backend", "limited:NoSave", "--loraguard-zoo", "mlp", "-k", "test_zoo and roundtrip and r4"
    )
    result.stdout.fnmatch_lines(
        ["roundtrip*1 partial*", "partial (first part held, then: tests):", "*nosave:*this release cannot save"]
    )


def test_rewrap_passes_only_on_the_librarys_refusal(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        refusing=textwrap.dedent("""
        from loraguard.backends.base import Unsupported
        from loraguard.backends.reference import ReferenceBackend

        class CannotAsk(ReferenceBackend):
            name = "cannot-ask"
            def wrap(self, base, config, adapter="default"):
                if any("lora_" in n for n, _ in base.named_modules()):
                    raise Unsupported("the backend cannot wrap twice")
                return super().wrap(base, config, adapter)
    """)
    )
    pytester.syspathinsert()
    result = pytester.runpytest(
        *QUICK,
        "--loraguard-backend",
        "refusing:CannotAsk",
        "--loraguard-zoo",
        "mlp",
        "-k",
        "test_zoo and rewrap and r4",
    )
    result.stdout.fnmatch_lines(["rewrap*1 partial*"])


def test_with_reproducers_off_a_failure_is_reported_and_nothing_is_written(pytester: pytest.Pytester) -> None:
    """What `loraguard matrix --no-reproducers` passes: the same failure, no script written or confirmed."""
    result = pytester.runpytest(*MUTANT, "--loraguard-reproducers", "off", "-k", "test_zoo and merge-forward")
    assert result.parseoutcomes().get("failed", 0) >= 1
    result.stdout.fnmatch_lines(["*violated by mutant-no-scale*", "*no reproducer written: *reproducers off*"])
    assert not (pytester.path / ".loraguard").exists() and not (pytester.path / "off").exists()
