"""peft's modules_to_save bare-suffix match (huggingface/peft#1917), shown on the "nested" zoo model.

peft/utils/other.py `_set_trainable` selects a module when ``key.endswith(target_key)``, so
modules_to_save=["model.layers.1.fc"] also wraps img_model.layers.1.fc. The reference uses the dot-boundary
rule. The strict xfail flips to a failure the day peft matches at a dot boundary.
"""

from __future__ import annotations

import pytest

peft = pytest.importorskip("peft")

from loraguard.backends.peft import PeftBackend  # noqa: E402
from loraguard.core.config import LoraConfig  # noqa: E402
from loraguard.frontends.agreement import PEFT_SUFFIX_BUG, VARIANTS, compare, suffix_traps  # noqa: E402
from loraguard.harness.zoo import ZOO  # noqa: E402
from loraguard.reference import LoraModel  # noqa: E402

NESTED = ZOO["nested"]


def _peft_saved_modules() -> list[str]:
    base = NESTED.make()
    config = VARIANTS["plain"].config(NESTED, base)
    model = PeftBackend().wrap(base, config)
    wrapper = peft.utils.other.ModulesToSaveWrapper
    return sorted(n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, wrapper))


def test_the_nested_model_has_a_bare_suffix_twin() -> None:
    assert NESTED.modules_to_save == ["model.layers.1.fc"]
    assert suffix_traps(NESTED) == ["img_model.layers.1.fc"]


def test_the_reference_wraps_only_the_named_module() -> None:
    model = LoraModel(
        NESTED.make(), LoraConfig(target_modules=NESTED.target_modules, modules_to_save=NESTED.modules_to_save)
    )
    assert list(model.saved_modules()) == ["model.layers.1.fc"]


@pytest.mark.xfail(strict=True, reason=f"{PEFT_SUFFIX_BUG}: peft matches modules_to_save with bare endswith")
def test_peft_wraps_only_the_named_module() -> None:
    assert _peft_saved_modules() == ["model.layers.1.fc"]


def test_every_nested_difference_is_the_suffix_bug() -> None:
    # While peft has the bug, each difference must trace to the trapped module; once fixed, there are none.
    row = compare(NESTED, "float32", VARIANTS["plain"])
    assert all(p.cause == PEFT_SUFFIX_BUG for p in row.problems), [p.text for p in row.problems]
    if _peft_saved_modules() != ["model.layers.1.fc"]:
        assert not row.keys_equal and row.verdict == f"peft bug {PEFT_SUFFIX_BUG}"
