"""Fixtures of the fuzz tests: the fault tests' worker registry and per-test settings."""

from tests.faults.conftest import fault_settings, workers

__all__ = ["fault_settings", "workers"]
