"""The worker's garbage collector settings (ROITRACK_GC_GEN0_THRESHOLD)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from roitrack.settings import Settings
from roitrack.worker import tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    """Give the test process its collector settings back afterwards."""
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_threshold_and_freeze_applied(restored_gc: None) -> None:
    _, older, oldest = gc.get_threshold()

    tune_gc(Settings(gc_gen0_threshold=12_345))

    assert gc.get_threshold() == (12_345, older, oldest)
    assert gc.get_freeze_count() > 0


def test_zero_keeps_python_defaults(restored_gc: None) -> None:
    before = gc.get_threshold()

    tune_gc(Settings(gc_gen0_threshold=0))

    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
