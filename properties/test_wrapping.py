"""Re-wrapping adapted models and loading for continued training or inference."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("rewrap")
def test_rewrap(lg_backend, lg_scenario):
    check("rewrap", lg_backend, lg_scenario)


@pytest.mark.loraguard("rewrap")
@given(data=st.data())
def test_rewrap_drawn(lg_backend, lg_settings, data):
    check_drawn("rewrap", lg_backend, lg_settings, data)


@pytest.mark.loraguard("continue-training")
def test_continue_training(lg_backend, lg_scenario):
    check("continue-training", lg_backend, lg_scenario)


@pytest.mark.loraguard("continue-training")
@given(data=st.data())
def test_continue_training_drawn(lg_backend, lg_settings, data):
    check_drawn("continue-training", lg_backend, lg_settings, data)
