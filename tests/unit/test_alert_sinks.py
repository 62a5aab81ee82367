"""Webhook retries and backoff, with a recorded fake in place of HTTP."""

from __future__ import annotations

import threading
import time

import pytest

from roitrack.alerts.rules import Webhook
from roitrack.alerts.sinks import (
    PostResult,
    RetryPolicy,
    WebhookDispatcher,
    backoff_delay_s,
    deliver,
    is_retriable_status,
    post_json,
    retry_after_s,
)

HOOK = Webhook("team", "https://hooks.example.com/T000/token-SECRET")
POLICY = RetryPolicy(max_attempts=4, timeout_s=1.0, backoff_s=0.01, backoff_max_s=0.02)


class FakePoster:
    """Returns the queued results in order and records each call."""

    def __init__(self, *results: PostResult) -> None:
        self.results = list(results)
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> PostResult:
        self.calls.append((url, body, headers))
        return self.results.pop(0) if self.results else PostResult(200)


def test_backoff_doubles_up_to_max() -> None:
    delays = [backoff_delay_s(retry, 0.5, 3.0) for retry in range(1, 6)]

    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_rejects_retry_zero() -> None:
    with pytest.raises(ValueError, match="retry must be 1 or more"):
        backoff_delay_s(0, 0.5, 3.0)


@pytest.mark.parametrize(("status", "retriable"), [(500, True), (503, True), (429, True), (408, True),
                                                   (400, False), (404, False), (301, False)])
def test_retriable_statuses(status: int, retriable: bool) -> None:
    assert is_retriable_status(status) is retriable


def test_retry_after_seconds_only() -> None:
    assert retry_after_s("3") == 3.0
    assert retry_after_s(" 10 ") == 10.0
    assert retry_after_s("Wed, 21 Oct 2026 07:28:00 GMT") is None
    assert retry_after_s(None) is None


def test_deliver_retries_until_accepted(caplog: pytest.LogCaptureFixture) -> None:
    poster = FakePoster(PostResult(503), PostResult(None, "ConnectionRefusedError: refused"), PostResult(204))

    outcome = deliver(HOOK, "a1", b"{}", POLICY, threading.Event(), poster)

    assert outcome is True
    assert len(poster.calls) == 3
    assert all(headers["X-Roitrack-Alert-Id"] == "a1" for _, _, headers in poster.calls)
    assert "SECRET" not in caplog.text


def test_deliver_gives_up_after_max_attempts(caplog: pytest.LogCaptureFixture) -> None:
    poster = FakePoster(*[PostResult(500)] * 10)

    outcome = deliver(HOOK, "a1", b"{}", POLICY, threading.Event(), poster)

    assert outcome is False
    assert len(poster.calls) == POLICY.max_attempts
    assert "after 4 attempts" in caplog.text
    assert "SECRET" not in caplog.text


def test_deliver_does_not_retry_client_error() -> None:
    poster = FakePoster(PostResult(404))

    assert deliver(HOOK, "a1", b"{}", POLICY, threading.Event(), poster) is False
    assert len(poster.calls) == 1


def test_deliver_stops_when_asked() -> None:
    stop = threading.Event()
    stop.set()
    poster = FakePoster(PostResult(503))

    assert deliver(HOOK, "a1", b"{}", POLICY, stop, poster) is None
    assert len(poster.calls) == 1


def test_dispatcher_reports_each_delivery_once() -> None:
    done: list[tuple[str, str]] = []
    gate = threading.Event()
    poster = FakePoster(PostResult(500), PostResult(200), PostResult(200))

    def gated(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> PostResult:
        gate.wait(5)
        return poster(url, body, headers, timeout_s)

    dispatcher = WebhookDispatcher({"team": HOOK}, POLICY, lambda alert, name: done.append((alert, name)), gated)
    dispatcher.start()
    try:
        dispatcher.submit("a1", b"{}", ("team",))
        # Still queued or in flight, so the repeat is skipped.
        dispatcher.submit("a1", b"{}", ("team",))
        dispatcher.submit("a2", b"{}", ("team",))
        gate.set()
        deadline = time.monotonic() + 5
        while len(done) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        dispatcher.stop(timeout_s=2)

    assert done == [("a1", "team"), ("a2", "team")]
    assert len(poster.calls) == 3
    assert dispatcher.pending() == 0


def test_post_json_reports_an_unsendable_url_without_it() -> None:
    """http.client refuses a URL with a space only when it sends; that must not stop the webhook thread."""
    result = post_json("http://hooks.example/token-SECRET here", b"{}", {}, 0.5)

    assert result.status is None
    assert result.error == "InvalidURL: the URL is not one http.client can send"
