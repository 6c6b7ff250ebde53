"""`copy_module` makes what `copy.deepcopy` makes, on every zoo model and on the module types deepcopy treats
specially, and never touches the module it copies."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from loraguard.core.module_copy import copy_module
from loraguard.harness.zoo import ZOO, available


def _tree(model: nn.Module) -> list[tuple[str, str, list[str]]]:
    """Every module as (path, type, attribute names), in order: what two copies must agree on."""
    return [(path, type(m).__name__, list(m.__dict__)) for path, m in model.named_modules(remove_duplicate=False)]


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.state_dict(keep_vars=True)) | dict(model.named_buffers(remove_duplicate=False))


def _assert_same_as_deepcopy(model: nn.Module) -> nn.Module:
    want, got = copy.deepcopy(model), copy_module(model)
    assert type(got) is type(model) and _tree(got) == _tree(want)
    mine, theirs, original = _tensors(got), _tensors(want), _tensors(model)
    assert list(mine) == list(theirs)
    for key, tensor in mine.items():
        assert tensor is not original[key], f"{key} is shared with the original"
        assert torch.equal(tensor, theirs[key]) and tensor.dtype == theirs[key].dtype
        assert type(tensor) is type(theirs[key]) and tensor.requires_grad == theirs[key].requires_grad
    # a tensor reachable under two names (tied weights) is one tensor in the copy too, exactly where deepcopy ties
    ties = lambda named: sorted((a, b) for a in named for b in named if a < b and named[a] is named[b])  # noqa: E731
    assert ties(mine) == ties(theirs)
    assert all(a.training == b.training for a, b in zip(got.modules(), want.modules()))
    return got


@pytest.mark.parametrize("name", [m.name for m in available()])
def test_every_zoo_model_copies_as_deepcopy_does(name: str) -> None:
    model = ZOO[name].make(seed=3)
    got = _assert_same_as_deepcopy(model)
    with torch.no_grad():
        next(got.parameters()).add_(1.0)  # a check that trains its copy
    fresh = ZOO[name].make(seed=3).state_dict().values()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh))


class _Hooked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.again = self.fc  # one module under two names
        self.register_buffer("steps", torch.zeros(1), persistent=False)
        self.settings = {"scale": [1.0]}  # a plain attribute: copied, not shared
        self.register_forward_hook(lambda module, args, out: out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class _OwnCopy(nn.Linear):
    copies = 0

    def __deepcopy__(self, memo):
        type(self).copies += 1
        new = nn.Linear(self.in_features, self.out_features)
        new.load_state_dict(self.state_dict())
        return new


class _OwnDictAsState(nn.Linear):
    def __getstate__(self):
        return self.__dict__  # not a copy: the module's own attributes


def test_hooks_shared_modules_buffers_and_attributes_copy_as_deepcopy_does() -> None:
    model = _Hooked()
    got = _assert_same_as_deepcopy(model)
    assert got.again is got.fc and got.fc is not model.fc
    assert got.settings == model.settings and got.settings["scale"] is not model.settings["scale"]
    assert "steps" in got._non_persistent_buffers_set and len(got._forward_hooks) == 1
    x = torch.ones(1, 3)
    with torch.no_grad():
        assert torch.equal(got(x), model(x)) and torch.equal(got(x), 2 * got.fc(x))  # the hook came along


def test_a_module_that_copies_itself_is_deep_copied_its_own_way() -> None:
    _OwnCopy.copies = 0
    model = nn.Sequential(_OwnCopy(2, 2), nn.ReLU())
    got = copy_module(model)
    assert _OwnCopy.copies == 1 and type(got[0]) is nn.Linear and type(got[1]) is nn.ReLU


def test_a_getstate_returning_the_module_s_own_dict_leaves_the_original_untouched() -> None:
    model = nn.Sequential(_OwnDictAsState(2, 2))
    before = dict(model[0].__dict__)
    got = _assert_same_as_deepcopy(model)
    assert model[0].__dict__ == before and all(model[0].__dict__[k] is v for k, v in before.items())
    assert got[0].weight is not model[0].weight
