"""loraguard: a reference LoRA oracle, invariants, a pytest plugin and an offline audit for LoRA adapters.

Importing the package is cheap: torch and friends load only in the modules that need them.
"""

__version__ = "0.1.0"
