"""`roitrack alerts` as a child process on the real broker and Redis, fed with crafted RoiUpdate records.

Each rule kind fires once, stays quiet while the breach lasts, resolves, keeps
its state and cool-down across a restart, and fires again only after the
cool-down. The crafted updates are dated a day ahead of the wall clock, so
that only the updates decide in these scenarios. A separate test covers the
consumer's clock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from roitrack.alerts.store import TOPIC_SINK, AlertKeys, AlertStore, OutboxEntry, sequence_field
from roitrack.connections import sync_redis_client
from roitrack.demo import settings_environment
from roitrack.embedded import free_port
from roitrack.settings import Settings
from roitrack.topics import create_topics
from schemas.outputs import ATTRIBUTION_MODELS, Alert
from tests.conftest import _delete_namespace
from tests.harness import REPO_ROOT, produce, read_topic, unique_settings, wait_for
from tests.integration.redis_servers import missing_redis_tools, start_node

COOLDOWN_S = 7200
#: One rule: lifetime ROI below 0, under the default model.
ROI_BELOW_ZERO = '[[rules]]\nid = "roi"\nkind = "roi_below"\nwindow = "lifetime"\nthreshold = 0\n'


class AlertsProcess:
    """A `roitrack alerts` child process: alerts on stdout go to one file, logs to another."""

    def __init__(self, settings: Settings, rules: Path, log_dir: Path, name: str) -> None:
        self.settings = settings
        self.rules = rules
        self.stdout_path = log_dir / f"{name}.stdout"
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, extra_env: dict[str, str] | None = None) -> "AlertsProcess":
        env = {**os.environ, **settings_environment(self.settings), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        with self.stdout_path.open("ab") as stdout, self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "roitrack", "--log-level", "info", "alerts", "--rules", str(self.rules)],
                env=env, stdout=stdout, stderr=log, cwd=REPO_ROOT,
            )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise AssertionError(f"alerts consumer did not stop within {timeout_s} s; log:\n{self.log_text()}")
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def printed(self) -> list[dict[str, Any]]:
        """Return the alerts printed on stdout."""
        text = self.stdout_path.read_text() if self.stdout_path.exists() else ""
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def alerts_settings(kafka_bootstrap: str, redis_url: str) -> Iterator[Settings]:
    settings = unique_settings(
        kafka_bootstrap, redis_url,
        alerts_auto_offset_reset="earliest",
        alerts_webhook_backoff_s=0.1,
        alerts_webhook_backoff_max_s=0.5,
        alerts_webhook_timeout_s=2.0,
    )
    create_topics(settings, kafka_bootstrap)
    try:
        yield settings
    finally:
        _delete_namespace(settings.redis_url, settings.redis_namespace)


@pytest.fixture
def processes() -> Iterator[list[AlertsProcess]]:
    """Processes started by a test; any still running at the end are killed."""
    started: list[AlertsProcess] = []
    yield started
    for process in started:
        process.kill()


def start(processes: list[AlertsProcess], settings: Settings, rules: Path, log_dir: Path, name: str,
          extra_env: dict[str, str] | None = None) -> AlertsProcess:
    process = AlertsProcess(settings, rules, log_dir, name).start(extra_env)
    processes.append(process)
    return process


def roi_update(campaign: str, window: str, sequence: int, at: datetime, **figures: Any) -> dict[str, Any]:
    """A RoiUpdate with the given figures under every model; defaults describe a healthy campaign."""
    values: dict[str, Any] = {"spend": "100", "conversions": "10", "revenue": "300", "roi": "0.2", "roas": "3",
                              "cpa": "10", **figures}
    model_figures = {name: values[name] for name in ("conversions", "revenue", "roi", "roas", "cpa")}
    return {
        "type": "roi_update",
        "campaign_id": campaign,
        "campaign_name": f"{campaign} campaign",
        "window": window,
        "window_s": None if window == "lifetime" else 3600,
        "window_end": None if window == "lifetime" else at.isoformat(),
        "sequence": sequence,
        "currency": "EUR",
        "margin": "0.4",
        "spend": values["spend"],
        "default_model": "last_touch",
        "roi": values["roi"],
        "roas": values["roas"],
        "cpa": values["cpa"],
        "models": {name: model_figures for name in ATTRIBUTION_MODELS},
        "emitted_at": at.isoformat(),
    }


def send_updates(settings: Settings, updates: list[dict[str, Any]]) -> None:
    produce(settings, [
        (settings.topic_roi_updates, update["campaign_id"].encode(), orjson.dumps(update)) for update in updates
    ])


def alerts_of(settings: Settings, campaign: str) -> list[dict[str, Any]]:
    return [alert for alert in read_topic(settings, settings.topic_alerts, idle_s=0.5, max_wait_s=10)
            if alert["campaign_id"] == campaign]


def wait_for_alerts(settings: Settings, campaign: str, count: int, process: AlertsProcess) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def arrived() -> bool:
        if not process.running:
            raise AssertionError(f"alerts consumer exited; log:\n{process.log_text()[-4000:]}")
        found[:] = alerts_of(settings, campaign)
        return len(found) >= count

    try:
        wait_for(arrived, 60, f"{count} alert(s) of campaign {campaign}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nalerts so far: {found}\nlog:\n{process.log_text()[-4000:]}") from None
    return found


def applied_sequence(settings: Settings, campaign: str, window: str) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        value = client.hget(AlertKeys(settings.redis_namespace, f"{settings.app_id}-alerts").sequences,
                            sequence_field(campaign, window))
    finally:
        client.close()
    return int(value) if value is not None else 0


def roi_below_case(tmp_path: Path) -> tuple[str, Path, datetime]:
    """A new campaign id, a rules file with ROI_BELOW_ZERO, and a time a day ahead for its updates."""
    return f"camp-{uuid.uuid4().hex[:6]}", write_rules(tmp_path / "rules.toml", ROI_BELOW_ZERO), (
        datetime.now(timezone.utc) + timedelta(days=1))


def write_rules(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- every rule kind: fire, stay quiet, restart, resolve, cool-down, fire again ---------------


@dataclass(frozen=True)
class Scenario:
    """Figures of each step. ``before`` ends with the update that fires."""

    rule: str
    window: str
    before: list[dict[str, Any]]
    still: dict[str, Any]
    clear: dict[str, Any]
    breach: dict[str, Any]
    metric: str
    fired_observed: str
    extra: dict[str, Any] = field(default_factory=dict)


SCENARIOS = {
    "roi_below": Scenario(
        rule='kind = "roi_below"\nwindow = "24h"\nthreshold = 0',
        window="24h",
        before=[{"roi": "0.3"}, {"roi": "-0.2"}],
        still={"roi": "-0.4"},
        clear={"roi": "0.1"},
        breach={"roi": "-0.3"},
        metric="roi",
        fired_observed="-0.2",
    ),
    "cpa_above": Scenario(
        rule='kind = "cpa_above"\nwindow = "lifetime"\nthreshold = "20"',
        window="lifetime",
        before=[{"cpa": "15"}, {"cpa": "25"}],
        still={"cpa": "30"},
        clear={"cpa": "18"},
        breach={"cpa": "26"},
        metric="cpa",
        fired_observed="25",
    ),
    "spend_without_conversions": Scenario(
        rule='kind = "spend_without_conversions"\nwindow = "1h"\nfor_s = 60',
        window="1h",
        before=[
            {"spend": "0", "conversions": "0", "cpa": None, "roi": None, "roas": None},
            {"spend": "10", "conversions": "0", "cpa": None},
            {"spend": "20", "conversions": "0", "cpa": None},
        ],
        still={"spend": "30", "conversions": "0", "cpa": None},
        clear={"spend": "40", "conversions": "1"},
        breach={"spend": "50", "conversions": "0", "cpa": None},
        metric="seconds_without_conversions",
        # The run began with the second update, one step (60 s) before the one that fires.
        fired_observed="60",
    ),
    "sudden_drop": Scenario(
        rule='kind = "sudden_drop"\nwindow = "7d"\nmetric = "roas"\ndrop_pct = 50\nbaseline_updates = 3',
        window="7d",
        before=[{"roas": "4"}, {"roas": "4"}, {"roas": "4"}, {"roas": "1"}],
        still={"roas": "1.5"},
        clear={"roas": "3.9"},
        breach={"roas": "1"},
        metric="roas",
        fired_observed="1",
    ),
}


@pytest.mark.parametrize("kind", sorted(SCENARIOS))
def test_rule_fires_resolves_and_survives_restart(
    kind: str, alerts_settings: Settings, processes: list[AlertsProcess], tmp_path: Path
) -> None:
    scenario = SCENARIOS[kind]
    settings = alerts_settings
    campaign = f"camp-{uuid.uuid4().hex[:6]}"
    rules = write_rules(tmp_path / "rules.toml", (
        f'[[rules]]\nid = "rule-{kind}"\n{scenario.rule}\ncooldown_s = {COOLDOWN_S}\n'
    ))
    # A day ahead of the wall clock: only the updates decide, never the consumer's clock.
    base = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    step_s = 60
    fired_at = base + timedelta(seconds=step_s * (len(scenario.before) - 1))
    sequence = 0

    def next_update(figures: dict[str, Any], at: datetime) -> dict[str, Any]:
        nonlocal sequence
        sequence += 1
        return roi_update(campaign, scenario.window, sequence, at, **figures)

    first = start(processes, settings, rules, tmp_path, "first")
    send_updates(settings, [
        next_update(figures, base + timedelta(seconds=step_s * index)) for index, figures in enumerate(scenario.before)
    ])
    fired = wait_for_alerts(settings, campaign, 1, first)
    send_updates(settings, [next_update(scenario.still, fired_at + timedelta(seconds=30))])
    wait_for(lambda: applied_sequence(settings, campaign, scenario.window) == sequence, 30,
             "the first consumer to apply the last update")
    assert first.stop() == 0, first.log_text()[-4000:]

    second = start(processes, settings, rules, tmp_path, "second")
    send_updates(settings, [next_update(scenario.still, fired_at + timedelta(seconds=60))])
    clear_sequence = sequence + 1
    send_updates(settings, [next_update(scenario.clear, fired_at + timedelta(seconds=120))])
    suppressed_at = fired_at + timedelta(seconds=300)
    send_updates(settings, [next_update(scenario.breach, suppressed_at)])
    refire_sequence = sequence + 1
    send_updates(settings, [next_update(scenario.breach, fired_at + timedelta(seconds=COOLDOWN_S + 100))])
    alerts = wait_for_alerts(settings, campaign, 3, second)
    assert second.stop() == 0, second.log_text()[-4000:]
    alerts = alerts_of(settings, campaign)

    assert [alert["state"] for alert in alerts] == ["fired", "resolved", "fired"]
    first_fired, resolved, refired = alerts
    assert first_fired == fired[0]
    assert first_fired["rule_id"] == f"rule-{kind}"
    assert first_fired["rule_kind"] == kind
    assert first_fired["metric"] == scenario.metric
    assert first_fired["window"] == scenario.window
    assert first_fired["update_sequence"] == len(scenario.before)
    assert parse_time(first_fired["observed_at"]) == fired_at
    assert first_fired["observed"] == scenario.fired_observed
    assert resolved["breach_id"] == first_fired["breach_id"]
    assert resolved["alert_id"] != first_fired["alert_id"]
    assert resolved["update_sequence"] == clear_sequence
    assert refired["breach_id"] != first_fired["breach_id"]
    assert refired["update_sequence"] == refire_sequence
    assert parse_time(refired["breach_started_at"]) == suppressed_at
    for alert in alerts:
        Alert.model_validate(alert)
    assert first.printed() == [first_fired]
    assert second.printed() == [resolved, refired]
    assert "Traceback" not in first.log_text() + second.log_text()


# --- sequence numbers ---------------------------------------------------------------


def test_stale_sequences_and_invalid_ignored(
    alerts_settings: Settings, processes: list[AlertsProcess], tmp_path: Path
) -> None:
    settings = alerts_settings
    campaign, rules, base = roi_below_case(tmp_path)
    steps = [(1, "0.3"), (3, "-1"), (2, "1"), (3, "1"), (4, "-1"), (5, "1")]
    updates = [roi_update(campaign, "lifetime", sequence, base + timedelta(seconds=index), roi=roi)
               for index, (sequence, roi) in enumerate(steps)]

    consumer = start(processes, settings, rules, tmp_path, "alerts")
    produce(settings, [(settings.topic_roi_updates, campaign.encode(), b"{not an update")])
    send_updates(settings, updates)
    wait_for_alerts(settings, campaign, 2, consumer)
    wait_for(lambda: applied_sequence(settings, campaign, "lifetime") == 5, 30, "the last update to be applied")
    assert consumer.stop() == 0
    alerts = alerts_of(settings, campaign)

    # Sequence 2 and the repeated 3 would each have resolved the breach.
    assert [(alert["state"], alert["update_sequence"]) for alert in alerts] == [("fired", 3), ("resolved", 5)]
    assert "stale=2" in consumer.log_text()
    assert "invalid=1" in consumer.log_text()
    assert "skipped 1 invalid RoiUpdate message(s)" in consumer.log_text()


def test_poison_update_skipped_and_next_applied(
    alerts_settings: Settings, processes: list[AlertsProcess], tmp_path: Path
) -> None:
    settings = alerts_settings
    campaign, rules, base = roi_below_case(tmp_path)

    consumer = start(processes, settings, rules, tmp_path, "alerts")
    send_updates(settings, [roi_update(campaign, "lifetime", 1, base, roi="-1")])
    wait_for_alerts(settings, campaign, 1, consumer)
    # Each of these would resolve the firing rule if the consumer read its ROI as a number.
    send_updates(settings, [
        roi_update(campaign, "lifetime", 2, base + timedelta(seconds=1), roi="1e999999"),
        roi_update(campaign, "lifetime", 3, base + timedelta(seconds=2), roi="abc"),
        roi_update(campaign, "lifetime", 4, base + timedelta(seconds=3), roi="0.5"),
    ])
    wait_for_alerts(settings, campaign, 2, consumer)
    wait_for(lambda: applied_sequence(settings, campaign, "lifetime") == 4, 30, "the valid update to be applied")
    assert consumer.stop() == 0
    alerts = alerts_of(settings, campaign)
    log_text = consumer.log_text()

    assert [(alert["state"], alert["update_sequence"]) for alert in alerts] == [("fired", 1), ("resolved", 4)]
    assert alerts[1]["observed"] == "0.5"
    assert "invalid=2" in log_text
    assert "roi: Value error, has more than 30 integer digits: '1e999999'" in log_text
    assert "Traceback" not in log_text


# --- the consumer's clock -----------------------------------------------------------------


def test_clock_fires_spend_rule_once_across_restart(
    alerts_settings: Settings, processes: list[AlertsProcess], tmp_path: Path
) -> None:
    settings = alerts_settings
    campaign = f"camp-{uuid.uuid4().hex[:6]}"
    rules = write_rules(tmp_path / "rules.toml", (
        '[[rules]]\nid = "spend"\nkind = "spend_without_conversions"\nwindow = "lifetime"\nfor_s = 60\n'
    ))
    started = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=600)

    first = start(processes, settings, rules, tmp_path, "first")
    send_updates(settings, [roi_update(campaign, "lifetime", 1, started, spend="25", conversions="0", cpa=None)])
    fired = wait_for_alerts(settings, campaign, 1, first)
    assert first.stop() == 0

    second = start(processes, settings, rules, tmp_path, "second")
    send_updates(settings, [roi_update(campaign, "lifetime", 2, started + timedelta(seconds=700), spend="30")])
    alerts = wait_for_alerts(settings, campaign, 2, second)
    assert second.stop() == 0

    assert [alert["state"] for alert in alerts] == ["fired", "resolved"]
    assert alerts[0] == fired[0]
    assert parse_time(fired[0]["breach_started_at"]) == started
    assert parse_time(fired[0]["observed_at"]) >= started + timedelta(seconds=600)
    assert int(fired[0]["observed"]) >= 600
    assert fired[0]["update_sequence"] == 1
    assert alerts[1]["update_sequence"] == 2
    assert first.printed() == [fired[0]]
    assert second.printed() == [alerts[1]]


# --- recovery from the outbox ----------------------------------------------------------------


def test_outbox_sent_after_crash(alerts_settings: Settings, processes: list[AlertsProcess], tmp_path: Path) -> None:
    settings = alerts_settings
    campaign = f"camp-{uuid.uuid4().hex[:6]}"
    rules = write_rules(tmp_path / "rules.toml", ROI_BELOW_ZERO)
    now = datetime.now(timezone.utc)
    # What a crash right after the Redis write leaves: the alert in the outbox, no sink done.
    alert = Alert(
        alert_id="a" * 32, breach_id="b" * 32, rule_id="roi", rule_kind="roi_below", state="fired",
        campaign_id=campaign, campaign_name=None, window="lifetime", model="last_touch", metric="roi",
        observed=Decimal(-1), threshold=Decimal(0), baseline=None, spend=Decimal(10), currency="EUR", update_sequence=1,
        breach_started_at=now, observed_at=now, emitted_at=now, message_en="en", message_nl="nl",
    )
    keys = AlertKeys(settings.redis_namespace, f"{settings.app_id}-alerts")
    client = sync_redis_client(settings)
    store = AlertStore(client, keys)
    try:
        store.write({}, {}, [OutboxEntry(alert, 0, (TOPIC_SINK,))])

        consumer = start(processes, settings, rules, tmp_path, "alerts")
        delivered = wait_for_alerts(settings, campaign, 1, consumer)
        wait_for(lambda: not store.outbox(), 30, "the outbox to empty")
        assert consumer.stop() == 0
    finally:
        client.close()

    assert [Alert.model_validate(found) for found in delivered] == [alert]
    assert consumer.printed() == [orjson.loads(alert.model_dump_json())]


# --- webhooks ---------------------------------------------------------------------------------


class Recorder(BaseHTTPRequestHandler):
    """Records every POST. The path /flaky fails with 503 until it was called ``FAILURES`` times."""

    FAILURES = 2
    requests: list[tuple[str, dict[str, str], bytes]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:  # noqa: N802  # the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with self.lock:
            self.requests.append((self.path, dict(self.headers), body))
            flaky_calls = sum(1 for path, _, _ in self.requests if path == "/flaky")
        status = 503 if self.path == "/flaky" and flaky_calls <= self.FAILURES else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, type[Recorder]]]:
    handler = type("TestRecorder", (Recorder,), {"requests": [], "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_webhooks_receive_alert_and_retry(
    kafka_bootstrap: str, redis_url: str, processes: list[AlertsProcess], tmp_path: Path,
    webhook_server: tuple[str, type[Recorder]],
) -> None:
    address, recorder = webhook_server
    secret_path = "/hook/token-SECRET-5521"
    settings = unique_settings(
        kafka_bootstrap, redis_url,
        alerts_auto_offset_reset="earliest",
        alerts_webhook_urls=(address + secret_path,),
        alerts_webhook_backoff_s=0.1,
        alerts_webhook_backoff_max_s=0.5,
        alerts_webhook_timeout_s=2.0,
    )
    create_topics(settings, kafka_bootstrap)
    campaign = f"camp-{uuid.uuid4().hex[:6]}"
    rules = write_rules(tmp_path / "rules.toml", """
[[webhooks]]
name = "flaky"
url_env = "TEST_FLAKY_HOOK"

[[rules]]
id = "roi"
kind = "roi_below"
window = "lifetime"
threshold = 0
webhooks = ["flaky"]
""")
    keys = AlertKeys(settings.redis_namespace, f"{settings.app_id}-alerts")
    client = sync_redis_client(settings)
    store = AlertStore(client, keys)
    try:
        consumer = start(processes, settings, rules, tmp_path, "alerts", {"TEST_FLAKY_HOOK": address + "/flaky"})
        send_updates(settings, [roi_update(campaign, "lifetime", 1, datetime.now(timezone.utc), roi="-0.5")])
        alert = wait_for_alerts(settings, campaign, 1, consumer)[0]

        def posted() -> bool:
            with recorder.lock:
                paths = [path for path, _, _ in recorder.requests]
            return paths.count(secret_path) >= 1 and paths.count("/flaky") >= recorder.FAILURES + 1

        wait_for(posted, 30, "the webhook posts")
        wait_for(lambda: not store.outbox(), 30, "the outbox to empty")
        assert consumer.stop() == 0
    finally:
        client.close()
        _delete_namespace(settings.redis_url, settings.redis_namespace)

    with recorder.lock:
        requests = list(recorder.requests)
    assert [path for path, _, _ in requests].count(secret_path) == 1
    assert [path for path, _, _ in requests].count("/flaky") == recorder.FAILURES + 1
    for path, headers, body in requests:
        assert orjson.loads(body) == alert, path
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Roitrack-Alert-Id"] == alert["alert_id"]
    log_text = consumer.log_text()
    assert log_text.count("retrying in") == recorder.FAILURES
    assert "accepted alert" in log_text
    assert "token-SECRET" not in log_text


# --- Redis down at the start --------------------------------------------------------------


def test_waits_for_redis_and_shares_partitions(
    kafka_bootstrap: str, processes: list[AlertsProcess], tmp_path: Path
) -> None:
    """With Redis down, consumers keep their partitions paused and still rebalance, then catch up.

    A consumer that waited for Redis inside its rebalance listener blocked the
    group: a second consumer got no partitions until Redis came back.
    """
    skip = missing_redis_tools()
    if skip:
        pytest.skip(skip)
    port = free_port()
    settings = unique_settings(kafka_bootstrap, f"redis://127.0.0.1:{port}/0", alerts_auto_offset_reset="earliest")
    create_topics(settings, kafka_bootstrap)
    campaign, rules, base = roi_below_case(tmp_path)

    first = start(processes, settings, rules, tmp_path, "first")
    send_updates(settings, [roi_update(campaign, "lifetime", 1, base, roi="-1")])
    wait_for(lambda: "loading the alert state failed" in first.log_text(), 60, "a failed load of the alert state")
    second = start(processes, settings, rules, tmp_path, "second")
    # Both hold one of the two partitions, paused, while Redis is still down.
    def assigned(process: AlertsProcess) -> bool:
        log_text = process.log_text()
        return "partitions [0] assigned" in log_text or "partitions [1] assigned" in log_text

    wait_for(lambda: assigned(first) and assigned(second),
             6 * settings.consumer_session_timeout_s, "a partition for each consumer while Redis is down")
    assert read_topic(settings, settings.topic_alerts, idle_s=0.5, max_wait_s=5) == []

    node = start_node(tmp_path / "redis", port, ["--port", str(port)], redis.Redis(port=port))
    try:
        fired = wait_for_alerts(settings, campaign, 1, first)
        assert [(alert["state"], alert["update_sequence"]) for alert in fired] == [("fired", 1)]
        assert first.stop() == 0
        assert second.stop() == 0
    finally:
        node.stop()
    assert "Traceback" not in first.log_text() + second.log_text()
