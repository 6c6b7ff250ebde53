"""Shared test configuration: pytester drives the plugin in its own sessions; one torch thread per xdist worker."""

import os

pytest_plugins = ["pytester"]

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: intra-op threads only contend
    import torch

    torch.set_num_threads(1)
