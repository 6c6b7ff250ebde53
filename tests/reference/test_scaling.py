"""Scaling: alpha / r, alpha / sqrt(r) with rsLoRA, and rank_pattern / alpha_pattern per module."""

from __future__ import annotations

import math

import pytest
import torch

from loraguard.core.config import LoraConfig, scaling

from .helpers import assert_changes, assert_close, wrapped


@pytest.mark.parametrize(
    ("r", "alpha", "rslora", "want"),
    [
        (4, 8, False, 2.0),
        (8, 4, False, 0.5),
        (4, 8, True, 4.0),
        (16, 8, True, 2.0),
        (2, 3, True, 3 / math.sqrt(2)),
    ],
)
def test_scaling_rule(r: int, alpha: float, rslora: bool, want: float) -> None:
    assert scaling(r, alpha, rslora) == pytest.approx(want, rel=1e-15)


@pytest.mark.parametrize("rslora", [False, True])
def test_layer_output_is_base_plus_scaled_lora(rslora: bool) -> None:
    model = wrapped("mlp", r=4, lora_alpha=8, use_rslora=rslora, target_modules=["fc1"])
    layer = model.lora_layers()["fc1"]
    s = 8 / math.sqrt(4) if rslora else 8 / 4
    assert layer.scaling["default"] == s
    a, b = layer.factors("default")
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got, base = layer(x), layer.base_layer(x)
        want = base + s * (x @ a.T @ b.T)
    assert_changes(got, base)
    assert_close(got, want)


def test_patterns_override_rank_and_alpha_per_module() -> None:
    model = wrapped(
        "nested",
        r=8,
        lora_alpha=16,
        target_modules=["fc", "fc_out"],
        rank_pattern={"model.layers.0.fc": 2},
        alpha_pattern={"fc_out": 4},
    )
    layers = model.lora_layers()
    # The pattern key names one module; the module of the same suffix in img_model keeps r.
    assert layers["model.layers.0.fc"].rank["default"] == 2
    assert layers["model.layers.0.fc"].scaling["default"] == 16 / 2
    assert layers["model.layers.0.fc"].factors("default")[0].shape == (2, 8)
    assert layers["img_model.layers.0.fc"].rank["default"] == 8
    assert layers["img_model.layers.0.fc"].scaling["default"] == 16 / 8
    for path in ("model.layers.0.fc_out", "img_model.layers.1.fc_out"):
        assert layers[path].rank["default"] == 8
        assert layers[path].scaling["default"] == 4 / 8


def test_rslora_uses_the_patterned_rank() -> None:
    config = LoraConfig(
        r=16,
        lora_alpha=8,
        use_rslora=True,
        target_modules=["fc1", "fc2"],
        rank_pattern={"fc2": 4},
        alpha_pattern={"fc2": 6},
    )
    assert config.scaling_for("fc1") == 8 / 4
    assert config.scaling_for("fc2") == 6 / 2
    model = wrapped(
        "mlp",
        **{
            k: getattr(config, k)
            for k in ("r", "lora_alpha", "use_rslora", "target_modules", "rank_pattern", "alpha_pattern")
        },
    )
    assert model.lora_layers()["fc2"].scaling["default"] == 3.0


def test_pattern_keys_are_regexes_on_a_dotted_suffix() -> None:
    config = LoraConfig(target_modules=["fc"], rank_pattern={r"layers\.[01]\.fc": 2, "xhead": 3})
    assert config.rank_for("model.layers.1.fc") == 2
    assert config.rank_for("img_model.layers.0.fc") == 2
    assert config.rank_for("model.layers.1.fc_out") == 8
    assert config.rank_for("head") == 8  # "xhead" must not catch "head" ...
    assert config.rank_for("xhead") == 3
    assert config.rank_for("a.xhead") == 3  # ... but does catch a dotted path ending in it
