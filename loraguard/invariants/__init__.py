"""The invariants: each promise of a LoRA library, written once, used by the properties, plugin, ZeRO-3 ranks and audit."""
