"""Weighted combinations of adapters."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("weighted-combination")
def test_weighted_combination(lg_backend, lg_scenario):
    check("weighted-combination", lg_backend, lg_scenario)


@pytest.mark.loraguard("weighted-combination")
@given(data=st.data())
def test_weighted_combination_drawn(lg_backend, lg_settings, data):
    check_drawn("weighted-combination", lg_backend, lg_settings, data)
