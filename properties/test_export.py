"""Exporting a model whose base weights trained together with an unmerged LoRA."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("mixed-export")
def test_mixed_export(lg_backend, lg_scenario):
    check("mixed-export", lg_backend, lg_scenario)


@pytest.mark.loraguard("mixed-export")
@given(data=st.data())
def test_mixed_export_drawn(lg_backend, lg_settings, data):
    check_drawn("mixed-export", lg_backend, lg_settings, data)
