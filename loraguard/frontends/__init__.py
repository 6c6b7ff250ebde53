"""What users call: the pytest plugin, the `loraguard` command, the demo and the reference-vs-peft agreement."""
