"""Units behind the plugin's trust fixes: idempotent registration, per-invariant seeds, float64 arbitration."""

import pytest
import torch

from loraguard.core.tolerance import arbitrate, bound
from loraguard.invariants.registry import REGISTRY, Invariant, all_invariants, register


def test_registering_the_same_function_again_is_harmless_a_different_one_is_an_error() -> None:
    import importlib

    import loraguard.invariants.combination as module

    all_invariants()
    importlib.reload(module)  # what pytester's in-process runs do: the module registers its function again
    existing = REGISTRY["weighted-combination"]
    assert existing.check.__module__ == module.__name__

    def other(backend, scenario):
        pass

    with pytest.raises(ValueError, match="registered twice"):
        register(Invariant("weighted-combination", "impostor", other))
    assert REGISTRY["weighted-combination"] is existing


def test_a_kind_lists_its_own_invariants_and_a_module_registers_only_the_kind_listed_for_it() -> None:
    """all_invariants(kind) imports that kind's modules alone, so _MODULES must say which kind each module
    registers: a rank then imports no Hypothesis (the import contract in pyproject.toml keeps its modules so)."""
    for kind in ("zero3", "fsdp", "sequence"):
        assert {inv.kind for inv in all_invariants(kind).values()} == {kind}

    def misplaced(ctx):
        pass

    misplaced.__module__ = "loraguard.invariants.zero3"
    with pytest.raises(ValueError, match="_MODULES lists 'zero3' under kind 'zero3'"):
        register(Invariant("misplaced-kind", "a scenario check in the zero3 module", misplaced))
    assert "misplaced-kind" not in REGISTRY


def test_an_oracle_free_form_registers_again_harmlessly_a_different_one_is_an_error() -> None:
    import importlib

    import loraguard.invariants.tuners as module
    from loraguard.invariants.registry import ORACLE_FREE, oracle_free

    all_invariants()
    importlib.reload(module)  # pytester's in-process runs import the module again
    existing = ORACLE_FREE["merge-forward"]

    def impostor(backend, scenario):
        pass

    with pytest.raises(ValueError, match="two oracle-free forms"):
        oracle_free("merge-forward")(impostor)
    assert ORACLE_FREE["merge-forward"] is existing


def test_each_invariant_meets_its_own_drawn_examples_deterministically(monkeypatch, request) -> None:
    from loraguard.harness.settings import RunOptions, resolve
    from loraguard.run import in_pytest

    drawn: dict[str, list[str]] = {}

    def record(inv, backend, scenario):
        drawn.setdefault(inv.id, []).append(repr((scenario.model.spec, scenario.config, scenario.seed)))

    monkeypatch.setattr(in_pytest, "run_invariant", record)
    settings = resolve(RunOptions(backends=["reference"], profile="quick", builtin_known_failures=False))
    for name in ("merge-forward", "roundtrip", "merge-forward"):
        in_pytest.check_drawn(name, settings.backends[0], settings, request.node)
    first = drawn["merge-forward"][: len(drawn["merge-forward"]) // 2]
    assert first == drawn["merge-forward"][len(first) :]  # same invariant: same examples, run after run
    # another invariant: other examples (Hypothesis tries the simplest example first under any seed)
    assert len(set(first) & set(drawn["roundtrip"])) <= 1 and len(set(first)) > 1


def test_rounding_on_a_wide_fused_layer_is_not_a_violation_a_wrong_merge_is() -> None:
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(4, 256, generator=gen, dtype=torch.float64), torch.randn(768, 256, generator=gen).double()
    exact = x @ w.T
    unmerged = (x.bfloat16() @ w.bfloat16().T).double()  # both paths rounded in bf16, about equally far off
    merged = (x.bfloat16().float() @ w.bfloat16().float().T).bfloat16().double()
    # the ordinary difference can exceed a bound computed from magnitudes alone...
    violated, why = arbitrate(merged, unmerged, exact, torch.bfloat16)
    assert not violated, why
    wrong = merged * 1.05  # a scaling error of 5%
    violated, why = arbitrate(wrong, unmerged, exact, torch.bfloat16)
    assert violated and "beyond" in why
    assert bound(exact, torch.bfloat16) > 0


class _Item:
    """What check_drawn reads of its pytest item: the xfail marker a known failure gets, its stash, --runxfail."""

    name = "test_drawn[merge-forward-reference]"

    def __init__(self, known: bool) -> None:
        self.known = known
        self.config = self
        self.stash: dict = {}  # no known failure told apart by message

    def get_closest_marker(self, name: str):
        return pytest.mark.xfail.mark if name == "xfail" and self.known else None

    def getoption(self, name: str, default=None):
        return default


def test_a_known_failure_is_reported_unshrunk_an_unknown_one_is_shrunk(monkeypatch) -> None:
    from loraguard.harness.settings import RunOptions, resolve
    from loraguard.invariants.checks import InvariantViolation
    from loraguard.run import in_pytest

    tried: list[int] = []

    def fails_on_three_leaves(inv, backend, scenario):
        tried.append(len(scenario.model.spec.leaves))
        if tried[-1] >= 3:
            raise InvariantViolation("three leaves or more")

    monkeypatch.setattr(in_pytest, "run_invariant", fails_on_three_leaves)
    # a 2 s shrink budget (the ci profile's is 10 s) shows the difference; shrinking longer only costs the suite time
    opts = RunOptions(backends=["reference"], builtin_known_failures=False, reproducer_dir=None, shrink="2")
    settings = resolve(opts)
    runs = {}
    for known in (True, False):
        tried.clear()
        with pytest.raises(pytest.fail.Exception, match="three leaves or more"):
            in_pytest.check_drawn("merge-forward", settings.backends[0], settings, _Item(known))
        runs[known] = list(tried)
    first = next(i for i, n in enumerate(runs[True]) if n >= 3)
    assert runs[True] == runs[False][: first + 1] + runs[True][first + 1 :]  # the same examples up to the failure
    assert len(runs[True]) <= first + 2  # then only the final replay of the failing example
    assert len(runs[False]) > len(runs[True])  # unknown: shrunk


def test_unmatched_target_names_no_container_whose_own_error_would_hide_the_typo() -> None:
    """Found by the thorough profile against peft: targets 'fc_out' and 'xfc.xfc' gave entries ['fc_out', 'xfc', typo],
    'xfc' also names the container 'xfc', and peft rightly refused that module first ("Target module ... is not
    supported"), which the invariant took for an error that hides the typo. Now the entries are the full names."""
    pytest.importorskip("peft")
    from loraguard.backends.peft import PeftBackend
    from loraguard.backends.reference import ReferenceBackend
    from loraguard.core.config import LoraConfig
    from loraguard.harness.scenarios import Scenario
    from loraguard.harness.strategies import TreeSpec, tree_zoo_model
    from loraguard.invariants.checks import InvariantViolation
    from loraguard.invariants.registry import run_invariant

    tree = TreeSpec(leaves=(("fc_out", "linear"), ("xfc.xfc", "linear"), ("fc", "linear")), embedding=None, tie="none")
    config = LoraConfig(r=1, lora_alpha=2, target_modules="fc_out|xfc\\.xfc", init_lora_weights=False)
    scenario = Scenario(tree_zoo_model(tree), config, label="drawn3")
    check = all_invariants()["unmatched-target"]
    run_invariant(check, ReferenceBackend(), scenario)
    try:
        run_invariant(check, PeftBackend(), scenario)
    except InvariantViolation as err:  # peft 0.21 ignores the typo silently (reproducers/peft/unmatched_target_...)
        assert "the error does not name" not in str(err), err
