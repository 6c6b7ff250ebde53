"""The peft backend and target_parameters: parameters are reported under their own path, nested wrappers included;
a release with the transposed 3D layout or the one-adapter limit skips with its reason instead of failing."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")

from loraguard.backends import peft as peft_backend  # noqa: E402
from loraguard.backends.base import Unsupported  # noqa: E402
from loraguard.core.config import LoraConfig  # noqa: E402
from loraguard.harness.zoo import ZOO  # noqa: E402

PARAMS = ["experts.gate_up_proj", "experts.down_proj", "router.weight"]


def _backend() -> peft_backend.PeftBackend:
    backend = peft_backend.PeftBackend()
    if "target_parameters" not in backend.capabilities:
        pytest.skip(f"peft {backend.version()} has no target_parameters")
    return backend


def test_parameters_are_read_under_their_own_path() -> None:
    backend = _backend()
    base = ZOO["moe"].make()
    params = {p: base.get_parameter(p) for p in PARAMS}
    model = backend.wrap(base, LoraConfig(r=2, target_modules=["shared"], target_parameters=list(PARAMS)))
    factors = backend.lora_factors(model, "default")
    assert set(factors) == {*PARAMS, "shared"}
    assert factors["experts.gate_up_proj"][0].shape == (2 * 3, 12)  # A: (r * experts, d2)
    for path, param in params.items():
        assert backend.base_weight(model, path) is param


def test_a_release_with_the_transposed_expert_layout_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _backend()
    monkeypatch.setattr(peft_backend, "_release", lambda: (0, 18, 1))
    with pytest.raises(Unsupported, match="other way round"):
        backend.peft_kwargs(LoraConfig(target_parameters=["experts.gate_up_proj"]))
    assert backend.peft_kwargs(LoraConfig(target_modules=["shared"]))["target_modules"] == ["shared"]


def test_the_one_adapter_limit_is_a_skip() -> None:
    backend = _backend()
    with pytest.raises(Unsupported, match="only one LoRA adapter per model with `target_parameters`"):
        with backend._one_parameter_adapter_limit():
            raise ValueError("At the moment, only one LoRA adapter per model with `target_parameters` is allowed.")
    with pytest.raises(ValueError, match="something else"):
        with backend._one_parameter_adapter_limit():
            raise ValueError("something else")
