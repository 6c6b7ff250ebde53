"""The explicit operation sequences find peft 0.21.2's three sequence bugs on every run (not by chance draws)."""

import pytest
import torch

pytest.importorskip("peft")

from loraguard.backends import load_backend  # noqa: E402
from loraguard.invariants.checks import InvariantViolation  # noqa: E402
from loraguard.invariants.sequence_machine import sequence_machine  # noqa: E402
from loraguard.invariants.sequences import EXAMPLES, replay  # noqa: E402

BUGS = EXAMPLES[:3]  # huggingface/peft#1917, the 'default'-named module, modules_to_save 'base' + 'base.base'


@pytest.mark.parametrize("example", BUGS, ids=["bare-suffix", "default-named-module", "nested-saved-modules"])
def test_peft_fails_the_sequence_that_exposed_its_bug(example):
    peft = load_backend("peft")
    if peft.version() != "0.21.2":
        pytest.skip(f"the sequences record peft 0.21.2's bugs; installed: {peft.version()}")
    with pytest.raises(InvariantViolation, match="explicit sequence"):
        replay(sequence_machine(peft, (torch.float32,)), example, peft)
