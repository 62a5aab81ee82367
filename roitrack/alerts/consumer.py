"""The `roitrack alerts` consumer loop: roi-updates in, alerts out, state in Redis.

Each loop polls a batch of RoiUpdate records, evaluates the rules
(``AlertEngine``), and then, in this order:

1. writes the changed alert states, the last sequence number per campaign
   and window, and the new alerts (into the outbox) to Redis, in one
   transaction;
2. produces the new alerts to the alerts topic and prints them, and marks
   that sink done in the outbox;
3. queues them for their webhooks, whose threads mark each webhook done;
4. commits the batch's offsets to Kafka.

Recovery rule: on start and after every partition assignment, the consumer
pauses the assigned partitions and loads the alert state from Redis. While
Redis is down it retries with back-off, outside the rebalance listener, so the
group can still rebalance. Then it sends what the outbox still holds for the
assigned partitions, and resumes from the group's committed offsets. Updates
read again after a crash between steps 1 and 4 have a sequence number at or
below the stored one and are ignored, so they fire nothing twice. A crash
before step 1 evaluates the same updates again from the same state, which
gives the same alerts with the same ids. After a crash between step 1 and the
end of step 3, the next start sends the alerts that the outbox still holds. A
sink that had already received one of them receives it again, with the same
``alert_id``. Delivery is therefore at least once, and consumers drop repeats
by ``alert_id``.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable, TypeVar

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError
from redis.exceptions import RedisError

from roitrack.alerts.engine import AlertEngine, Changes, NewAlert
from roitrack.alerts.rules import RuleSet
from roitrack.alerts.sinks import AlertProducer, RetryPolicy, WebhookDispatcher, alert_json, print_alerts
from roitrack.alerts.store import TOPIC_SINK, AlertKeys, AlertStore, OutboxEntry, webhook_sink
from roitrack.connections import kafka_python_config, sync_redis_client
from roitrack.settings import Settings
from schemas.outputs import RoiUpdate

log = logging.getLogger(__name__)

_POLL_TIMEOUT_MS = 500
_RETRY_INITIAL_S = 0.5
_RETRY_MAX_S = 30.0
_INVALID_LOG_INTERVAL_S = 60.0
_STOP_JOIN_EXTRA_S = 1.0

T = TypeVar("T")


class AlertsError(RuntimeError):
    """The alerts consumer cannot start. The message contains the fix."""


class _Stopping(Exception):
    """The consumer was asked to stop while it retried a Redis or Kafka operation."""


def default_group(settings: Settings) -> str:
    """Return the consumer group of `roitrack alerts` without --group: ``<ROITRACK_APP_ID>-alerts``."""
    return f"{settings.app_id}-alerts"


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python has no type hints
    def __init__(self, owner: "AlertConsumer") -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.owner.revoke({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner.assign(set(assigned))


class AlertConsumer:
    """Consumes roi-updates in its own consumer group and sends alerts. See the module docstring."""

    def __init__(self, settings: Settings, rules: RuleSet, group_id: str, stop: threading.Event) -> None:
        self.settings = settings
        self.rules = rules
        self.group_id = group_id
        self.stop = stop
        self.engine = AlertEngine(rules)
        self.assigned: set[int] = set()
        #: The assigned TopicPartitions, paused from assignment until the state is loaded.
        self._assigned_tps: set[Any] = set()
        #: False until the state of the assigned partitions is loaded; no update is evaluated before.
        self.loaded = False
        #: True from an assignment until its state is loaded.
        self._assignment_pending = False
        self._load_delay_s = _RETRY_INITIAL_S
        self._next_load_s = 0.0
        self.redis = sync_redis_client(settings)
        self.store = AlertStore(self.redis, AlertKeys(settings.redis_namespace, group_id))
        used = {name for rule in rules.rules for name in rules.webhooks_for(rule)}
        self.dispatcher = WebhookDispatcher(
            {name: webhook for name, webhook in rules.webhooks.items() if name in used},
            RetryPolicy.from_settings(settings),
            on_done=lambda alert_id, name: self.store.sink_done(alert_id, webhook_sink(name)),
        )
        self.producer: AlertProducer | None = None
        self.consumer: Any = None
        self._invalid_since_log = 0
        self._invalid_logged_at = 0.0

    # --- lifecycle -----------------------------------------------------------

    def run(self) -> None:
        """Consume until ``stop`` is set, then close every client."""
        try:
            try:
                self.producer = AlertProducer(self.settings)
            except KafkaError as exc:
                raise AlertsError(
                    f"connecting to Kafka at {self.settings.kafka_bootstrap} failed: {exc}. Check that the broker "
                    "runs and that ROITRACK_KAFKA_BOOTSTRAP points at it."
                ) from exc
            self.consumer = self._open_consumer()
            self.dispatcher.start()
            log.info(
                "alerts consumer started: group=%s topic=%s rules=%d webhooks=%s",
                self.group_id, self.settings.topic_roi_updates, len(self.rules.rules),
                ", ".join(f"{w.name} ({w.host})" for w in self.dispatcher.webhooks.values()) or "none",
            )
            while not self.stop.is_set():
                try:
                    self._loop_once()
                except _Stopping:
                    break
        finally:
            self._close()

    def _open_consumer(self) -> Any:
        settings = self.settings
        bootstrap = settings.require_kafka()
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=bootstrap.split(","),
                client_id="roitrack-alerts",
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset=settings.alerts_auto_offset_reset,
                allow_auto_create_topics=False,
                session_timeout_ms=int(settings.consumer_session_timeout_s * 1000),
                heartbeat_interval_ms=int(settings.consumer_heartbeat_s * 1000),
                **kafka_python_config(settings),
            )
        except KafkaError as exc:
            raise AlertsError(
                f"connecting to Kafka at {bootstrap} failed: {exc}. Check that the broker runs and that "
                "ROITRACK_KAFKA_BOOTSTRAP points at it."
            ) from exc
        topics = consumer.topics()
        missing = [name for name in (settings.topic_roi_updates, settings.topic_alerts) if name not in topics]
        if missing:
            consumer.close(autocommit=False)
            raise AlertsError(
                f"topic(s) {', '.join(missing)} not found on {bootstrap}. Create them with "
                "`roitrack topics create`, or set ROITRACK_TOPIC_ROI_UPDATES and ROITRACK_TOPIC_ALERTS "
                "to the existing topics."
            )
        consumer.subscribe([settings.topic_roi_updates], listener=_Rebalance(self))
        return consumer

    def _close(self) -> None:
        self.dispatcher.stop(timeout_s=self.settings.alerts_webhook_timeout_s + _STOP_JOIN_EXTRA_S)
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
        if self.producer is not None:
            self.producer.close()
        self.redis.close()
        stats = self.engine.stats
        log.info(
            "alerts consumer stopped: updates applied=%d stale=%d unwatched=%d invalid=%d, alerts fired=%d resolved=%d",
            stats["updates_applied"], stats["updates_stale"], stats["updates_unwatched"], stats["updates_invalid"],
            stats["alerts_fired"], stats["alerts_resolved"],
        )

    # --- rebalance -------------------------------------------------------------

    def revoke(self, partitions: set[int]) -> None:
        self.assigned -= partitions
        self._assigned_tps = {tp for tp in self._assigned_tps if tp.partition not in partitions}
        self.loaded = False
        if partitions:
            log.info("partitions revoked: %s", sorted(partitions))

    def assign(self, assigned: set[Any]) -> None:
        """Pause the assigned partitions; the loop loads their state and resumes them.

        Loading waits for Redis, and a rebalance listener that waits blocks the
        consumer's poll, so the group would rebalance again and again while
        Redis is down. Paused partitions return no records, so nothing is read
        before the state it needs.
        """
        self._assigned_tps = set(assigned)
        self.assigned = {tp.partition for tp in assigned}
        self.loaded = False
        self._assignment_pending = True
        self._load_delay_s = _RETRY_INITIAL_S
        self._next_load_s = 0.0
        if assigned:
            self.consumer.pause(*assigned)
        log.info("partitions %s assigned; they stay paused until the alert state is loaded",
                 sorted(self.assigned) or "none")

    def _load(self) -> bool:
        """Load the alert state and send the outbox of the assigned partitions; return True when loaded.

        One attempt per call. After a failure the partitions stay paused, and
        the next attempt waits, doubling from 0.5 s up to 30 s.
        """
        now_s = time.monotonic()
        if now_s < self._next_load_s:
            return False
        try:
            states = self.store.load_states()
            sequences = self.store.load_sequences()
            outbox = self.store.outbox()
        except RedisError as exc:
            log.warning(
                "loading the alert state failed: %s: %s; partitions %s stay paused, retrying in %.1f s",
                type(exc).__name__, exc, sorted(self.assigned) or "none", self._load_delay_s,
            )
            self._next_load_s = now_s + self._load_delay_s
            self._load_delay_s = min(_RETRY_MAX_S, self._load_delay_s * 2)
            return False
        self.engine.load(states, sequences)
        self.loaded = True
        self._assignment_pending = False
        pending = [entry for entry in outbox if entry.partition in self.assigned]
        log.info(
            "partitions assigned: %s; loaded %d alert state(s), %d undelivered alert(s)",
            sorted(self.assigned) or "none", len(self.engine.states), len(pending),
        )
        self._redeliver(pending)
        if self._assigned_tps:
            self.consumer.resume(*self._assigned_tps)
        return True

    def _redeliver(self, entries: list[OutboxEntry]) -> None:
        to_topic = [entry for entry in entries if TOPIC_SINK in entry.sinks]
        if to_topic:
            self._send_to_topic([(entry.alert.alert_id, entry.alert, alert_json(entry.alert)) for entry in to_topic])
        for entry in entries:
            if not entry.sinks:
                # An entry whose pending set is gone has nothing left to send.
                self._retry("updating the outbox", lambda: self.store.sink_done(entry.alert.alert_id, TOPIC_SINK))
                continue
            names = []
            for sink in entry.sinks:
                if not sink.startswith("webhook:"):
                    continue
                name = sink.removeprefix("webhook:")
                if name in self.dispatcher.webhooks:
                    names.append(name)
                else:
                    log.warning(
                        "alert %s waits for webhook %s, which the rules and settings no longer define; "
                        "it is dropped for that webhook", entry.alert.alert_id, name,
                    )
                    self._retry("updating the outbox", lambda: self.store.sink_done(entry.alert.alert_id, sink))
            if names:
                self.dispatcher.submit(entry.alert.alert_id, alert_json(entry.alert), tuple(names))

    # --- one batch ---------------------------------------------------------------

    def _loop_once(self) -> None:
        if not self.loaded and not (self._assignment_pending and self._load()):
            # Polling joins the group, or keeps the consumer in it; paused partitions return nothing.
            self.consumer.poll(timeout_ms=_POLL_TIMEOUT_MS)
            return
        polled = self.consumer.poll(timeout_ms=_POLL_TIMEOUT_MS)
        if not self.loaded:
            # A rebalance during this poll paused the partitions again; what it returned is read again.
            return
        changes = Changes()
        now = datetime.now(timezone.utc)
        records = 0
        for tp in sorted(polled):
            for record in polled[tp]:
                records += 1
                update = self._decode(record)
                if update is not None:
                    self.engine.apply(update, tp.partition, now, changes)
        self.engine.tick(now, self.assigned, changes)

        if not changes.empty:
            entries = [self._outbox_entry(new) for new in changes.alerts]
            # When stopping interrupts this write, nothing is committed and the batch is read again.
            self._retry(
                "writing the alert state",
                lambda: self.store.write(changes.states, changes.sequences, entries),
            )
            self._send(changes.alerts)
        if records:
            try:
                self.consumer.commit()
            except CommitFailedError as exc:
                # A rebalance took the partitions away; the new owner skips the updates by sequence number.
                log.warning("committing offsets failed after a rebalance, the updates will be skipped on re-read: %s", exc)

    def _decode(self, record: Any) -> RoiUpdate | None:
        try:
            return RoiUpdate.model_validate_json(record.value or b"")
        except ValidationError as exc:
            self.engine.stats["updates_invalid"] += 1
            self._invalid_since_log += 1
            now_s = time.monotonic()
            if now_s - self._invalid_logged_at >= _INVALID_LOG_INTERVAL_S:
                problem = exc.errors(include_url=False)[0]
                location = ".".join(str(part) for part in problem["loc"]) or "(message)"
                log.warning(
                    "skipped %d invalid RoiUpdate message(s) in the last %.0f s; latest at partition=%d "
                    "offset=%d: %s: %s", self._invalid_since_log, _INVALID_LOG_INTERVAL_S, record.partition,
                    record.offset, location, problem["msg"],
                )
                self._invalid_since_log = 0
                self._invalid_logged_at = now_s
            return None

    @staticmethod
    def _outbox_entry(new: NewAlert) -> OutboxEntry:
        sinks = (TOPIC_SINK, *(webhook_sink(name) for name in new.webhooks))
        return OutboxEntry(new.alert, new.partition, sinks)

    def _send(self, alerts: list[NewAlert]) -> None:
        for new in alerts:
            alert = new.alert
            log.info(
                "alert %s: rule=%s campaign=%s window=%s state=%s observed=%s threshold=%s",
                alert.alert_id, alert.rule_id, alert.campaign_id, alert.window, alert.state,
                alert.observed, alert.threshold,
            )
        self._send_to_topic([(new.alert.alert_id, new.alert, alert_json(new.alert)) for new in alerts])
        for new in alerts:
            if new.webhooks:
                self.dispatcher.submit(new.alert.alert_id, alert_json(new.alert), new.webhooks)

    def _send_to_topic(self, alerts: list[tuple[str, Any, bytes]]) -> None:
        producer = self.producer
        assert producer is not None, "run() opens the producer before the first batch"
        # When stopping interrupts the send, the alerts stay in the outbox for the next start.
        self._retry("producing alerts", lambda: producer.send([(alert, body) for _, alert, body in alerts]))
        if self.settings.alerts_stdout:
            print_alerts([body for _, _, body in alerts])
        for alert_id, _, _ in alerts:
            self._retry("updating the outbox", lambda: self.store.sink_done(alert_id, TOPIC_SINK))

    def _retry(self, operation: str, action: Callable[[], T]) -> T:
        """Run ``action`` until it succeeds, backing off on Redis and Kafka errors.

        Raises ``_Stopping`` when the consumer is asked to stop before it succeeded.
        """
        delay_s = _RETRY_INITIAL_S
        attempt = 1
        while True:
            try:
                result = action()
                if attempt > 1:
                    log.info("%s succeeded on attempt %d", operation, attempt)
                return result
            except (RedisError, KafkaError) as exc:
                log.warning("%s failed (attempt %d), retrying in %.1f s: %s: %s", operation, attempt, delay_s,
                            type(exc).__name__, exc)
            if self.stop.wait(delay_s):
                log.error("%s failed and the consumer is stopping; the next start repeats it", operation)
                raise _Stopping(operation)
            delay_s = min(_RETRY_MAX_S, delay_s * 2)
            attempt += 1


def run_alerts(settings: Settings, rules: RuleSet, group_id: str, stop: threading.Event) -> None:
    """Run the alerts consumer until ``stop`` is set. Raises ``AlertsError`` when it cannot start."""
    AlertConsumer(settings, rules, group_id, stop).run()
