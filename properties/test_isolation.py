"""Adapter isolation."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("isolation")
def test_isolation(lg_backend, lg_scenario):
    check("isolation", lg_backend, lg_scenario)


@pytest.mark.loraguard("isolation")
@given(data=st.data())
def test_isolation_drawn(lg_backend, lg_settings, data):
    check_drawn("isolation", lg_backend, lg_settings, data)
