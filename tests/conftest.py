"""Shared test configuration: pytester drives the plugin in its own sessions."""

pytest_plugins = ["pytester"]
