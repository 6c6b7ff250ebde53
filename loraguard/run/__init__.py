"""How invariants are executed and reported: inside pytest (`in_pytest`), in plain Python (`in_process`), and on
ranks of a distributed world (`distributed`); the end-of-run summary and reproducer scripts."""
