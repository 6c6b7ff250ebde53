"""The invariants: each promise of a LoRA library, written once with an ID in one registry, and used by the
properties, the plugin, the in-process runner and the distributed ranks."""
