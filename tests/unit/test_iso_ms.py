"""ISO 8601 text of epoch milliseconds, as the outputs carry event times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from streams.records import iso_ms

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: 3000-01-01T00:00:00Z, the end of the accepted event times.
_LATEST_MS = 32_503_680_000_000


def _exact(epoch_ms: int) -> str:
    """Format with integer timedelta arithmetic, which loses no millisecond."""
    moment = _EPOCH + timedelta(milliseconds=epoch_ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_known_times() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(1_796_500_000_123) == "2026-12-05T19:46:40.123Z"
    assert iso_ms(_LATEST_MS - 1) == "2999-12-31T23:59:59.999Z"


def test_far_future_millisecond() -> None:
    # A float division by 1000 turned this into .988.
    assert iso_ms(20_023_714_623_989) == "2604-07-11T22:57:03.989Z"


@given(st.integers(min_value=0, max_value=_LATEST_MS))
def test_matches_exact_arithmetic(epoch_ms: int) -> None:
    assert iso_ms(epoch_ms) == _exact(epoch_ms)
