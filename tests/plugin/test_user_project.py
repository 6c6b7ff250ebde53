"""The plugin in a user's project: it adds its suite beside the user's tests and keeps its settings to itself."""

import textwrap

import pytest

from tests.plugin.test_plugin import QUICK

USER_TESTS = textwrap.dedent("""
    import torch
    from hypothesis import given, settings, strategies as st

    THREADS = torch.get_num_threads()

    def test_users_own_test_runs():
        assert torch.get_num_threads() == THREADS

    @given(st.integers())
    def test_users_hypothesis_keeps_its_profile(n):
        assert (settings.default.max_examples, settings.default.stateful_step_count) == (37, 11)
""")

# The user's own profile, loaded before any plugin configures. Hypothesis picks its "ci" profile
# when CI is set, so its default profile cannot be the reference point.
USER_CONFTEST = textwrap.dedent("""
    from hypothesis import settings

    settings.register_profile("users-own", max_examples=37, stateful_step_count=11)
    settings.load_profile("users-own")
""")


def test_loraguard_in_addopts_keeps_the_users_tests_and_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    pytester.makeconftest(USER_CONFTEST)
    pytester.makeini(
        "[pytest]\naddopts = --loraguard --loraguard-backend reference --loraguard-profile quick --loraguard-zoo mlp\n"
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-k", "users or (test_drawn and merge-forward)", "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines_random(
        ["*test_users_own_test_runs PASSED*", "*test_users_hypothesis_keeps_its_profile PASSED*", "*test_drawn*"]
    )


def test_paths_given_on_the_command_line_run_too(pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(test_user=USER_TESTS)
    pytester.makeconftest(USER_CONFTEST)
    result = pytester.runpytest(
        *QUICK, "--loraguard-backend", "reference", "--loraguard-zoo", "mlp", str(path), "-k", "users or test_zoo"
    )
    assert result.parseoutcomes()["passed"] > 2
    result.stdout.fnmatch_lines(["test_user.py ..*", "merge-forward*passed*"])


def test_report_header_names_backend_torch_profile_device(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*QUICK, "--loraguard-backend", "reference", "--co")
    result.stdout.fnmatch_lines(["loraguard: reference 0.1.0; torch *; profile quick; device cpu; * known failures*"])
