"""Merging: merged output equals forward, merged weights follow W + s*B@A, merges undo."""

import pytest
from hypothesis import given, strategies as st

from loraguard.run.in_pytest import check, check_drawn


@pytest.mark.loraguard("merge-forward")
def test_merge_forward(lg_backend, lg_scenario):
    check("merge-forward", lg_backend, lg_scenario)


@pytest.mark.loraguard("merge-forward")
@given(data=st.data())
def test_merge_forward_drawn(lg_backend, lg_settings, data):
    check_drawn("merge-forward", lg_backend, lg_settings, data)


@pytest.mark.loraguard("merge-unmerge")
def test_merge_unmerge(lg_backend, lg_scenario):
    check("merge-unmerge", lg_backend, lg_scenario)


@pytest.mark.loraguard("merge-unmerge")
@given(data=st.data())
def test_merge_unmerge_drawn(lg_backend, lg_settings, data):
    check_drawn("merge-unmerge", lg_backend, lg_settings, data)


@pytest.mark.loraguard("multi-active")
def test_multi_active(lg_backend, lg_scenario):
    check("multi-active", lg_backend, lg_scenario)


@pytest.mark.loraguard("multi-active")
@given(data=st.data())
def test_multi_active_drawn(lg_backend, lg_settings, data):
    check_drawn("multi-active", lg_backend, lg_settings, data)
