"""Primitives every layer shares, each written once: the key format, name matching, the config, the merge
arithmetic and the tolerance table. Imports nothing else from loraguard."""
