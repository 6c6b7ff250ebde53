"""Known failures: shipped per library and release range, applied by the installed release; strict for zoo
scenarios, non-strict for drawn examples; the user's own files add to them."""

from pathlib import Path

import pytest

from loraguard.harness.known_failures import BUILTIN_DIR, read_known_failures
from tests.plugin.test_plugin import QUICK

SECTIONED = """# top comment
every[x-*]          # before any section: every release
[peft >=0.21,<0.22]
naming[peft-*]      # in range
[peft <0.20]
roundtrip[peft-*]   # out of range
[loralib]
isolation[loralib-*]  # another library, any release
"""


def test_sections_apply_by_release(tmp_path: Path) -> None:
    path = tmp_path / "known.txt"
    path.write_text(SECTIONED)
    got = {k.pattern: k.reason for k in read_known_failures(path, {"peft": "0.21.2"})}
    assert got == {"every[x-*]": "before any section: every release", "naming[peft-*]": "in range"}
    assert {k.pattern for k in read_known_failures(path, {"peft": "0.19.1", "loralib": "0.1.2"})} == {
        "every[x-*]",
        "roundtrip[peft-*]",
        "isolation[loralib-*]",
    }


@pytest.mark.parametrize(
    ("text", "named"),
    [("[peft >=0.21\n", "known.txt:1"), ("[peft banana]\n", "'banana'"), ("a b  # spaces\n", "known.txt:1")],
)
def test_a_malformed_line_names_file_and_line(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "known.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=named):
        read_known_failures(path, {"peft": "0.21.2"})


def test_every_shipped_file_parses_and_names_its_library() -> None:
    files = sorted(BUILTIN_DIR.glob("*.txt"))
    assert files
    for path in files:
        read_known_failures(path, {path.stem: "0.21.2"})
        sections = [line for line in path.read_text().splitlines() if line.startswith("[")]
        assert sections and all(s.startswith(f"[{path.stem}") for s in sections), path


def test_peft_bugs_of_the_installed_release_are_xfails_out_of_the_box(pytester: pytest.Pytester) -> None:
    run = [*QUICK, "--loraguard-backend", "peft", "--loraguard-zoo", "nested", "-k", "test_zoo and naming", "-rx"]
    result = pytester.runpytest(*run)
    result.assert_outcomes(xfailed=1)
    result.stdout.fnmatch_lines(["known bugs of the installed releases met: 1 of *", "*huggingface/peft#1917*"])
    off = pytester.runpytest(*run, "--loraguard-builtin-known-failures", "off")
    off.assert_outcomes(failed=1)


def test_drawn_entries_are_not_strict_zoo_entries_are(pytester: pytest.Pytester) -> None:
    known = pytester.makefile(".txt", known="merge-forward[reference-*]  # pretend it was broken\n")
    base = [*QUICK, "--loraguard-backend", "reference", "--loraguard-zoo", "mlp", f"--loraguard-known-failures={known}"]
    drawn = pytester.runpytest(*base, "-k", "test_drawn and merge-forward")
    drawn.assert_outcomes(xpassed=1)
    assert drawn.ret == pytest.ExitCode.OK
    zoo = pytester.runpytest(*base, "-k", "test_zoo and merge-forward")
    assert zoo.parseoutcomes().get("failed", 0) >= 1 and not zoo.parseoutcomes().get("passed")
    zoo.stdout.fnmatch_lines(["*XPASS(strict)*pretend it was broken*"])


def test_bad_builtin_switch_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("-p", "no:cacheprovider", "--loraguard", "--loraguard-builtin-known-failures", "maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--loraguard-builtin-known-failures*maybe*"])


def test_an_entry_with_a_message_xfails_only_that_failure_and_reports_any_other(pytester: pytest.Pytester) -> None:
    """`~ REGEX` tells known bugs apart: a listed test that fails otherwise than listed is red, with a reproducer."""
    mutant = [*QUICK, "--loraguard-backend", "tests.mutants:ScalingDroppedAtMerge", "--loraguard-zoo", "mlp"]
    listed = pytester.makefile(
        ".txt", listed="merge-forward[mutant-no-scale-*] ~ merged weight of .* vs W \\+ s\\*B@A  # the scale bug\n"
    )
    other = pytester.makefile(".txt", other="merge-forward[mutant-no-scale-*] ~ KeyError  # another bug\n")
    for test in ("test_zoo and merge-forward and r4-f32", "test_drawn and merge-forward"):
        met = pytester.runpytest(*mutant, f"--loraguard-known-failures={listed}", "-k", test)
        assert met.parseoutcomes().get("xfailed", 0) >= 1 and not met.parseoutcomes().get("failed"), test
        met.stdout.fnmatch_lines(["known bugs of the installed releases met: 1 of 1 listed*"])
        unlisted = pytester.runpytest(*mutant, f"--loraguard-known-failures={other}", "-k", test)
        assert unlisted.parseoutcomes().get("failed", 0) >= 1 and not unlisted.parseoutcomes().get("xfailed"), test
        unlisted.stdout.fnmatch_lines(["*violated by mutant-no-scale*", "reproducer for *"])


def test_a_bad_message_regex_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "known.txt"
    path.write_text("naming[peft-*] ~ (unclosed  # why\n")
    with pytest.raises(ValueError, match=r"known.txt:1: the regex after '~' does not compile"):
        read_known_failures(path, {"peft": "0.21.2"})


class _Item:
    """What check_drawn reads of its pytest item: an xfail marker, the entries told apart by message, --runxfail."""

    name = "test_drawn[merge-forward-reference]"

    def __init__(self, known: list) -> None:
        from loraguard.run.in_pytest import KNOWN

        self.stash = {KNOWN: known}
        self.config = self

    def get_closest_marker(self, name: str):
        return pytest.mark.xfail.mark if name == "xfail" else None

    def getoption(self, name: str, default=None):
        return default


def test_a_drawn_test_draws_on_past_a_known_bug_and_reports_a_second_one(monkeypatch) -> None:
    """The known bug (one leaf) is met first; drawing goes on and the unlisted one (three leaves) is reported."""
    from loraguard.harness.known_failures import KnownFailure
    from loraguard.harness.settings import RunOptions, resolve
    from loraguard.invariants.checks import InvariantViolation
    from loraguard.run import in_pytest

    seen: list[int] = []

    def two_bugs(inv, backend, scenario):
        leaves = len(scenario.model.spec.leaves)
        seen.append(leaves)
        if leaves == 1:
            raise InvariantViolation("known: one leaf")
        if leaves >= 3 and second:
            raise InvariantViolation("unlisted: three leaves or more")

    monkeypatch.setattr(in_pytest, "run_invariant", two_bugs)
    opts = RunOptions(backends=["reference"], builtin_known_failures=False, shrink="0.5", reproducer_dir=None)
    settings = resolve(opts)
    item = _Item([KnownFailure("merge-forward[reference-drawn]", "one leaf", "known.txt:1", "one leaf")])
    second = True
    with pytest.raises(pytest.fail.Exception, match="unlisted: three leaves") as failed:
        in_pytest.check_drawn("merge-forward", settings.backends[0], settings, item)
    assert not isinstance(failed.value, in_pytest.KnownFailureMet)
    assert seen.index(1) < next(i for i, n in enumerate(seen) if n >= 3)  # the known bug came first
    second = False
    with pytest.raises(in_pytest.KnownFailureMet, match="known: one leaf"):
        in_pytest.check_drawn("merge-forward", settings.backends[0], settings, item)
