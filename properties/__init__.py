"""loraguard's property suite: the invariants as pytest tests, run by `pytest --loraguard` from the installed package.

One file per area. Each invariant has a test over the deterministic zoo scenarios and a Hypothesis property
over drawn scenarios; both call the one implementation in loraguard.invariants.
"""
