"""What a run checks: the tiny model zoo, scenarios, Hypothesis strategies, resolved settings, and the machinery
that builds distributed (ZeRO-3, FSDP) setups. Below the invariants, above the backends."""
