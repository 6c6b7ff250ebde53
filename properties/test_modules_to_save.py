"""modules_to_save copies: trained, saved and restored; originals untouched."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("modules-to-save")
def test_modules_to_save(lg_backend, lg_scenario):
    check("modules-to-save", lg_backend, lg_scenario)


@pytest.mark.loraguard("modules-to-save")
@given(data=st.data())
def test_modules_to_save_drawn(lg_backend, lg_settings, data):
    check_drawn("modules-to-save", lg_backend, lg_settings, data)
