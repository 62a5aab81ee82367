"""Alert sinks: the alerts topic, standard output, and webhooks with retries.

The topic and standard output are written by the consumer loop before it
moves on. Webhooks are posted by one background thread per webhook, so a slow
or failing webhook delays neither the loop nor the other webhooks. Webhook URLs
never appear in logs, because they often carry a token: logs name the webhook
and its host.
"""

from __future__ import annotations

import http.client
import logging
import queue
import socket
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from kafka import KafkaProducer

from roitrack.alerts.rules import Webhook
from roitrack.connections import kafka_python_config
from roitrack.settings import Settings
from schemas.outputs import Alert

log = logging.getLogger(__name__)

#: HTTP statuses that a later attempt may turn into a success.
RETRIABLE_STATUSES = frozenset({408, 429})
_PRODUCE_TIMEOUT_S = 60.0
_QUEUE_POLL_S = 0.2
_RESPONSE_READ_BYTES = 64 * 1024


def alert_json(alert: Alert) -> bytes:
    """Serialize an alert as one line of JSON, the same bytes for the topic, stdout and webhooks."""
    return alert.model_dump_json().encode()


class AlertProducer:
    """Produces alerts to the alerts topic, keyed by campaign id, and waits for the acknowledgements."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic_alerts
        self.producer = KafkaProducer(
            bootstrap_servers=settings.require_kafka().split(","),
            client_id="roitrack-alerts",
            acks="all",
            linger_ms=5,
            **kafka_python_config(settings),
        )

    def send(self, alerts: list[tuple[Alert, bytes]]) -> None:
        """Produce the alerts and return once the broker acknowledged all; raise KafkaError otherwise."""
        futures = [
            self.producer.send(self.topic, key=alert.campaign_id.encode(), value=body) for alert, body in alerts
        ]
        self.producer.flush(timeout=_PRODUCE_TIMEOUT_S)
        for future in futures:
            future.get(timeout=_PRODUCE_TIMEOUT_S)

    def close(self) -> None:
        self.producer.close(timeout=_PRODUCE_TIMEOUT_S)


def print_alerts(bodies: list[bytes]) -> None:
    """Write each alert as one JSON line on standard output."""
    for body in bodies:
        sys.stdout.write(body.decode() + "\n")
    sys.stdout.flush()


# --- Webhooks ----------------------------------------------------------------


def backoff_delay_s(retry: int, initial_s: float, max_s: float) -> float:
    """Return the wait before retry number ``retry`` (1 for the first retry): doubling from ``initial_s``, capped at ``max_s``."""
    if retry < 1:
        raise ValueError(f"retry must be 1 or more, got {retry}")
    return min(max_s, initial_s * 2.0 ** (retry - 1))


def is_retriable_status(status: int) -> bool:
    """Return whether a webhook's HTTP status is worth another attempt: 408, 429 or 5xx."""
    return status in RETRIABLE_STATUSES or 500 <= status <= 599


def retry_after_s(value: str | None) -> float | None:
    """Parse a Retry-After header given in seconds; return None for a date or anything else."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


@dataclass(frozen=True, slots=True)
class PostResult:
    """The outcome of one webhook request: an HTTP status, or the network error that replaced it."""

    status: int | None
    error: str | None = None
    retry_after: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status <= 299

    @property
    def retriable(self) -> bool:
        return self.status is None or is_retriable_status(self.status)

    def describe(self) -> str:
        return f"status {self.status}" if self.status is not None else f"error {self.error}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Report a redirect as its 3xx status: urllib would repeat a POST as a GET without the body."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> PostResult:
    """POST a JSON body and return the status, or the network error.

    The error text is the exception's type and reason, which do not contain the URL.
    """
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **headers}
    )
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(_RESPONSE_READ_BYTES)
            return PostResult(int(response.status))
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers is not None else None
        exc.close()
        return PostResult(int(exc.code), retry_after=retry_after)
    except urllib.error.URLError as exc:
        return PostResult(None, f"{type(exc.reason).__name__}: {exc.reason}")
    except (socket.timeout, TimeoutError):
        return PostResult(None, f"timed out after {timeout_s} s")
    except OSError as exc:
        return PostResult(None, f"{type(exc).__name__}: {exc.strerror or exc}")
    except http.client.InvalidURL as exc:
        # Its text quotes part of the URL, which may hold a token.
        return PostResult(None, f"{type(exc).__name__}: the URL is not one http.client can send")


class Poster(Protocol):
    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> PostResult: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Webhook attempts, timeout and backoff, from the ROITRACK_ALERTS_WEBHOOK_* settings."""

    max_attempts: int
    timeout_s: float
    backoff_s: float
    backoff_max_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> "RetryPolicy":
        return cls(
            max_attempts=settings.alerts_webhook_max_attempts,
            timeout_s=settings.alerts_webhook_timeout_s,
            backoff_s=settings.alerts_webhook_backoff_s,
            backoff_max_s=settings.alerts_webhook_backoff_max_s,
        )


def deliver(
    webhook: Webhook,
    alert_id: str,
    body: bytes,
    policy: RetryPolicy,
    stop: threading.Event,
    post: Poster = post_json,
) -> bool | None:
    """POST one alert to one webhook, retrying with exponential backoff.

    Returns True when the webhook accepted it, False when it gave up (a
    status that is not retriable, or the last attempt failed), and None when
    ``stop`` was set before it finished, so the alert stays pending.
    """
    headers = {"User-Agent": "roitrack-alerts", "X-Roitrack-Alert-Id": alert_id}
    for attempt in range(1, policy.max_attempts + 1):
        result = post(webhook.url, body, headers, policy.timeout_s)
        if result.ok:
            if attempt > 1:
                log.info("webhook %s (%s) accepted alert %s on attempt %d", webhook.name, webhook.host, alert_id, attempt)
            return True
        if not result.retriable:
            log.error(
                "webhook %s (%s) rejected alert %s with %s; not retrying. Check the webhook's "
                "configuration and URL.", webhook.name, webhook.host, alert_id, result.describe(),
            )
            return False
        if attempt == policy.max_attempts:
            log.error(
                "webhook %s (%s) failed for alert %s after %d attempts, last with %s; giving up. The "
                "alert is still on the alerts topic.",
                webhook.name, webhook.host, alert_id, attempt, result.describe(),
            )
            return False
        delay_s = backoff_delay_s(attempt, policy.backoff_s, policy.backoff_max_s)
        requested_s = retry_after_s(result.retry_after)
        if requested_s is not None:
            delay_s = min(policy.backoff_max_s, max(delay_s, requested_s))
        log.warning(
            "webhook %s (%s) failed for alert %s with %s (attempt %d of %d); retrying in %.1f s",
            webhook.name, webhook.host, alert_id, result.describe(), attempt, policy.max_attempts, delay_s,
        )
        if stop.wait(delay_s):
            return None
    return False


DoneCallback = Callable[[str, str], None]


class WebhookDispatcher:
    """One queue and thread per webhook. ``on_done(alert_id, webhook name)`` runs after each delivery ends.

    ``on_done`` runs both when the webhook accepted the alert and when the
    delivery gave up, but not when ``stop`` interrupted it, so an interrupted
    delivery stays in the outbox for the next start.
    """

    def __init__(
        self, webhooks: dict[str, Webhook], policy: RetryPolicy, on_done: DoneCallback, post: Poster = post_json
    ) -> None:
        self.webhooks = webhooks
        self.policy = policy
        self.on_done = on_done
        self.post = post
        self.stop_event = threading.Event()
        self.queues: dict[str, queue.Queue[tuple[str, bytes]]] = {name: queue.Queue() for name in webhooks}
        self.threads = [
            threading.Thread(target=self._run, args=(name,), name=f"webhook-{name}", daemon=True) for name in webhooks
        ]
        #: (alert id, webhook name) pairs queued or in flight, so a redelivery does not queue them twice.
        self.in_flight: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def submit(self, alert_id: str, body: bytes, names: tuple[str, ...]) -> None:
        """Queue an alert for the named webhooks; names already queued for this alert are skipped."""
        for name in names:
            with self._lock:
                if (alert_id, name) in self.in_flight:
                    continue
                self.in_flight.add((alert_id, name))
            self.queues[name].put((alert_id, body))

    def pending(self) -> int:
        with self._lock:
            return len(self.in_flight)

    def _run(self, name: str) -> None:
        webhook = self.webhooks[name]
        pending = self.queues[name]
        while not self.stop_event.is_set():
            try:
                alert_id, body = pending.get(timeout=_QUEUE_POLL_S)
            except queue.Empty:
                continue
            try:
                outcome = deliver(webhook, alert_id, body, self.policy, self.stop_event, self.post)
                if outcome is not None:
                    self.on_done(alert_id, name)
            except Exception:
                # A Redis error in on_done must not end the thread: the alert stays in the
                # outbox and is posted again at the next start.
                log.exception("webhook %s (%s): finishing alert %s failed", name, webhook.host, alert_id)
            finally:
                with self._lock:
                    self.in_flight.discard((alert_id, name))

    def stop(self, timeout_s: float) -> None:
        """Stop the threads. A request in flight finishes; queued alerts stay in the outbox."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=timeout_s)
        left = self.pending()
        if left:
            log.info("stopped with %d webhook delivery(ies) pending; they are posted again at the next start", left)
