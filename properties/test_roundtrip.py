"""Save/load round-trips, exact to the bit and to the key name."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("roundtrip")
def test_roundtrip(lg_backend, lg_scenario):
    check("roundtrip", lg_backend, lg_scenario)


@pytest.mark.loraguard("roundtrip")
@given(data=st.data())
def test_roundtrip_drawn(lg_backend, lg_settings, data):
    check_drawn("roundtrip", lg_backend, lg_settings, data)
