"""Upgrade gating: snapshot what a library release does with a set of adapters, compare another release to it,
and run the invariant suite across releases (the release matrix). The snapshot format is in docs/gating.md."""
