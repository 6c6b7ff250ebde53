"""Running invariants on N ranks: the launcher (with hang detection), the per-rank worker, and one scenario's run."""
