"""Module-name matching on dot boundaries."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("naming")
def test_naming(lg_backend, lg_scenario):
    check("naming", lg_backend, lg_scenario)


@pytest.mark.loraguard("naming")
@given(data=st.data())
def test_naming_drawn(lg_backend, lg_settings, data):
    check_drawn("naming", lg_backend, lg_settings, data)
