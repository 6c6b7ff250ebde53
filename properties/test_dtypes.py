"""Dtypes and devices survive wrap, merge and unload."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("dtype")
def test_dtype(lg_backend, lg_scenario):
    check("dtype", lg_backend, lg_scenario)


@pytest.mark.loraguard("dtype")
@given(data=st.data())
def test_dtype_drawn(lg_backend, lg_settings, data):
    check_drawn("dtype", lg_backend, lg_settings, data)
