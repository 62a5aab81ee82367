"""Kafka topics of the pipeline: their partition counts and idempotent creation."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError, RetriableError, TopicAlreadyExistsError, for_code

from roitrack.connections import kafka_python_config
from roitrack.settings import Settings
from schemas.events import CAMPAIGN_TYPES, CONVERSION_TYPES, DEFINITION_TYPES, TOUCHPOINT_TYPES

logger = logging.getLogger(__name__)

_RETRY_INTERVAL_S = 0.25


def input_topic(settings: Settings, event_type: str) -> str | None:
    """Return the input topic that events of ``event_type`` belong on, or None for a type that has none."""
    if event_type in TOUCHPOINT_TYPES:
        return settings.topic_touchpoints
    if event_type in CONVERSION_TYPES:
        return settings.topic_conversions
    if event_type in CAMPAIGN_TYPES:
        return settings.topic_campaigns if event_type in DEFINITION_TYPES else settings.topic_spend
    return None


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic name and the partition count the pipeline expects."""

    name: str
    partitions: int


class TopicPartitionMismatchError(RuntimeError):
    """An existing topic has a different partition count from the settings."""

    def __init__(self, topic: str, actual: int, expected: int, setting: str) -> None:
        env_var = f"ROITRACK_{setting.upper()}"
        super().__init__(
            f"Topic {topic!r} exists with {actual} partitions, but {setting} expects "
            f"{expected}. Keys hash to partitions by count, and topics keyed alike must have "
            f"equal counts, so this cannot be fixed by adding partitions. Either set "
            f"{env_var}={actual} to use the existing topics, or delete {topic!r} and the "
            f"topics that share its key (their data is lost) and create them again. Brokers "
            f"that auto-create topics (tansu 0.6 does, with 4 partitions) create a topic with "
            f"their default count when a client uses it first, so create topics before "
            f"starting producers or workers."
        )
        self.topic = topic
        self.actual = actual
        self.expected = expected
        self.setting = setting


def _topic_layout(settings: Settings) -> list[tuple[str, str]]:
    """Return (topic name, name of the setting with its partition count) pairs."""
    person = "person_partitions"
    campaign = "campaign_partitions"
    return [
        (settings.topic_touchpoints, person),
        (settings.topic_conversions, person),
        (settings.topic_attributions, person),
        (settings.topic_dead_letters, person),
        (settings.topic_campaigns, campaign),
        (settings.topic_spend, campaign),
        (settings.topic_credits, campaign),
        (settings.topic_roi_updates, campaign),
        (settings.topic_alerts, campaign),
        (settings.topic_deal_events, campaign),
    ]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """List every topic of the pipeline with its partition count.

    Person-keyed topics and the dead-letter topic use ``person_partitions``;
    campaign-keyed topics use ``campaign_partitions``.
    """
    return [
        TopicSpec(name=name, partitions=int(getattr(settings, setting)))
        for name, setting in _topic_layout(settings)
    ]


def _partition_counts(admin: Any, names: list[str]) -> dict[str, int]:
    """Return the partition count of each topic in ``names`` that exists."""
    existing = set(admin.list_topics())
    requested = [name for name in names if name in existing]
    if not requested:
        return {}
    counts: dict[str, int] = {}
    for topic in admin.describe_topics(requested):
        if topic.get("error_code", 0) != 0:
            # Deleted between the two requests, or not visible yet: treat as missing.
            continue
        counts[topic["name"]] = len(topic.get("partitions") or [])
    return counts


def _check_partitions(
    specs: list[TopicSpec], settings_of: dict[str, str], counts: dict[str, int]
) -> None:
    for spec in specs:
        actual = counts.get(spec.name)
        if actual is not None and actual != spec.partitions:
            raise TopicPartitionMismatchError(
                spec.name, actual, spec.partitions, settings_of[spec.name]
            )


def _connect(settings: Settings, bootstrap: str, deadline: float) -> Any:
    """Open an admin client, letting kafka-python retry the bootstrap until ``deadline``."""
    remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
    return KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="roitrack-topics",
        bootstrap_timeout_ms=remaining_ms,
        request_timeout_ms=min(remaining_ms, 10_000),
        **kafka_python_config(settings),
    )


def _create_missing(
    admin: Any, missing: list[TopicSpec], replication_factor: int
) -> tuple[list[str], list[str]]:
    """Send one CreateTopics request; return (created names, names that already existed)."""
    request = {
        spec.name: {"num_partitions": spec.partitions, "replication_factor": replication_factor}
        for spec in missing
    }
    response = admin.create_topics(request, raise_errors=False)
    created: list[str] = []
    raced: list[str] = []
    for result in response["topics"]:
        name = result["name"]
        code = result.get("error_code", 0)
        if code == 0:
            created.append(name)
            continue
        error_class = for_code(code)
        if error_class is TopicAlreadyExistsError:
            raced.append(name)
            continue
        message = result.get("error_message") or error_class.__name__
        raise error_class(f"creating topic {name!r} failed: {message}")
    return created, raced


def create_topics(
    settings: Settings, bootstrap: str | None = None, *, timeout_s: float = 30.0
) -> list[str]:
    """Create the missing pipeline topics and return the names of those created.

    Existing topics with the expected partition count are left as they are, so
    a second call returns ``[]``. Raises ``TopicPartitionMismatchError`` before
    creating anything when an existing topic has another partition count.
    Retriable broker errors (a broker still starting, for example) are retried
    until ``timeout_s`` has passed.
    """
    servers = bootstrap if bootstrap is not None else settings.require_kafka()
    specs = topic_specs(settings)
    settings_of = dict(_topic_layout(settings))
    names = [spec.name for spec in specs]
    deadline = time.monotonic() + timeout_s
    attempt = 0

    while True:
        attempt += 1
        admin = None
        try:
            admin = _connect(settings, servers, deadline)
            counts = _partition_counts(admin, names)
            _check_partitions(specs, settings_of, counts)
            missing = [spec for spec in specs if spec.name not in counts]
            if not missing:
                logger.info("All %d topics exist on %s; created none", len(specs), servers)
                return []

            created, raced = _create_missing(admin, missing, settings.replication_factor)
            if raced:
                # Another client created these after our listing: check their counts.
                _check_partitions(specs, settings_of, _partition_counts(admin, raced))
            if created:
                remaining_ms = max(1000, int((deadline - time.monotonic()) * 1000))
                admin.wait_for_topics(created, timeout_ms=remaining_ms)
            logger.info(
                "Created %d topics on %s: %s", len(created), servers, ", ".join(created) or "none"
            )
            return created
        except RetriableError as exc:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Creating topics on {servers} timed out after {timeout_s:.0f} s "
                    f"({attempt} attempts); last error: {exc}. Check that the broker runs "
                    f"and ROITRACK_KAFKA_BOOTSTRAP points at it."
                ) from exc
            logger.warning(
                "Creating topics on %s failed (attempt %d), retrying: %s", servers, attempt, exc
            )
            time.sleep(_RETRY_INTERVAL_S)
        except KafkaError as exc:
            raise RuntimeError(
                f"Creating topics on {servers} failed: {exc}. Check the broker log and "
                f"that topic names and replication_factor={settings.replication_factor} "
                f"are valid for this cluster."
            ) from exc
        finally:
            if admin is not None:
                admin.close()
