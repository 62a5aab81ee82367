"""Shared pieces of the fault tests: a CI-sized journey dataset, its exact figures, a replay and the checks.

The dataset is the first ``ROITRACK_FAULT_ROWS`` rows (default 1,500) of the bundled
journey file, expanded by ``journey_events``. The expected figures come from the pure
attribution functions, so a fault test passes only when the pipeline under the fault
produces exactly what a clean run produces.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from roitrack.attribution import AttributionParams, StoredTouch, credit_all_models, eligible_touches
from roitrack.cli import CAMPAIGNS_FILE, JOURNEYS_FILE
from roitrack.journeys import journey_events, load_campaigns, read_journeys
from roitrack.replay import Replayer, make_producer
from roitrack.roi import roi_metrics
from roitrack.settings import Settings
from schemas.outputs import ATTRIBUTION_MODELS
from tests.harness import PipelineStats, WorkerProcess, latest_by_campaign, pipeline_stats, read_topic

log = logging.getLogger(__name__)

#: Journey rows replayed by each fault test; 1,500 rows are about 7,500 people and 43,000 events.
DATASET_ROWS = int(os.environ.get("ROITRACK_FAULT_ROWS", "1500"))
TOLERANCE = Decimal("1e-6")
#: Events per Kafka message in the replay, as `roitrack replay --batch-size`.
REPLAY_BATCH_SIZE = 20


@dataclass(frozen=True)
class Dataset:
    """Wire events of the reduced journey dataset and of the bundled campaigns."""

    journeys: list[dict[str, Any]]
    campaigns: list[dict[str, Any]]

    @property
    def purchases(self) -> list[dict[str, Any]]:
        return [event for event in self.journeys if event["type"] == "purchase"]


@functools.cache
def load_dataset(rows: int = DATASET_ROWS) -> Dataset:
    """Read the first ``rows`` journey rows and the campaigns file; cached per process."""
    journeys = journey_events(read_journeys(JOURNEYS_FILE)[:rows])
    campaigns, spends = load_campaigns(CAMPAIGNS_FILE)
    return Dataset(journeys=journeys, campaigns=[*campaigns, *spends])


@dataclass(frozen=True)
class Expected:
    """What a clean run of a dataset ends with."""

    #: model -> campaign id -> (conversions, revenue) in the lifetime window
    models: dict[str, dict[str, tuple[Decimal, Decimal]]]
    spend: dict[str, Decimal]
    margin: dict[str, Decimal]
    campaigns: frozenset[str]
    stats: PipelineStats
    conversion_ids: frozenset[str]


def _epoch_ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def expected_figures(dataset: Dataset, settings: Settings) -> Expected:
    """Compute the clean run's figures with the pure attribution functions.

    Revenue per campaign is weight x amount, summed without rounding, so it is an
    independent check of the pipeline's revenue split (equal within 1e-6).
    """
    params = AttributionParams(
        lookback_click_ms=settings.lookback_click_s * 1000,
        lookback_view_ms=settings.lookback_view_s * 1000,
        half_life_ms=settings.half_life_s * 1000,
        position_first_share=settings.position_first_share,
        position_last_share=settings.position_last_share,
    )
    touches: dict[str, list[StoredTouch]] = defaultdict(list)
    totals: dict[str, dict[str, list[Decimal]]] = {model: defaultdict(lambda: [Decimal(0), Decimal(0)]) for model in ATTRIBUTION_MODELS}
    stats = PipelineStats()
    conversion_ids: set[str] = set()
    for event in dataset.journeys:
        if event["type"] == "click":
            touches[event["user_id"]].append(
                StoredTouch(event["event_id"], event["campaign_id"], "click", _epoch_ms(event["event_time"]))
            )
            stats.touchpoints += 1
            continue
        if event["type"] != "purchase":
            raise ValueError(f"the journey dataset has an event of type {event['type']!r}; expected click or purchase")
        stats.conversions_received += 1
        conversion_ids.add(event["event_id"])
        time_ms = _epoch_ms(event["event_time"])
        eligible = eligible_touches(touches[event["user_id"]], time_ms, params)
        if not eligible:
            stats.conversions_unattributed += 1
            continue
        stats.conversions_attributed += 1
        amount = Decimal(event["amount"])
        for model, weights in credit_all_models(eligible, time_ms, params).items():
            for campaign_id, weight in weights.items():
                totals[model][campaign_id][0] += weight
                totals[model][campaign_id][1] += weight * amount

    spend: dict[str, Decimal] = defaultdict(Decimal)
    margin: dict[str, Decimal] = {}
    for event in dataset.campaigns:
        if event["type"] == "spend":
            spend[event["campaign_id"]] += Decimal(event["amount"])
        else:
            margin[event["campaign_id"]] = Decimal(event["margin"])
    models = {model: {campaign: (pair[0], pair[1]) for campaign, pair in by_campaign.items()} for model, by_campaign in totals.items()}
    credited = {campaign for by_campaign in models.values() for campaign in by_campaign}
    return Expected(
        models=models,
        spend=dict(spend),
        margin=margin,
        campaigns=frozenset(credited | set(margin) | set(spend)),
        stats=stats,
        conversion_ids=frozenset(conversion_ids),
    )


class ReplayThread:
    """Replays the campaigns, then the journeys at a limited rate, in a background thread."""

    def __init__(self, settings: Settings, dataset: Dataset, rate_per_s: float, batch_size: int = REPLAY_BATCH_SIZE) -> None:
        self.settings = settings
        self.dataset = dataset
        self.rate_per_s = rate_per_s
        self.batch_size = batch_size
        self.error: BaseException | None = None
        self.produced = 0
        self.started_s = 0.0
        self.finished_s: float | None = None
        self._thread = threading.Thread(target=self._run, name="fault-replay", daemon=True)

    def start(self) -> "ReplayThread":
        self.started_s = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = make_producer(self.settings)
        try:
            Replayer(self.settings, producer, batch_size=1).replay(
                (orjson.dumps(event), event) for event in self.dataset.campaigns
            )
            replayer = Replayer(self.settings, producer, batch_size=self.batch_size, rate_per_s=self.rate_per_s,
                                on_progress=self._count)
            replayer.replay((orjson.dumps(event), event) for event in self.dataset.journeys)
        except BaseException as exc:  # noqa: BLE001  # reported by join()
            self.error = exc
        finally:
            producer.close()
            self.finished_s = time.monotonic()

    def _count(self, events: int) -> None:
        self.produced += events

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_s

    def join(self, timeout_s: float) -> None:
        """Wait for the replay to end; raise when it failed or is still running after ``timeout_s``."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"the replay was still running after {timeout_s} s ({self.produced} events produced)")
        if self.error is not None:
            raise AssertionError(f"the replay failed after {self.produced} events: {self.error!r}") from self.error


def wait_progress(condition: Callable[[], bool], timeout_s: float, workers: Sequence[WorkerProcess] = ()) -> bool:
    """Poll ``condition`` until it holds; return False after ``timeout_s``, fail when a worker exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        for worker in workers:
            if not worker.running:
                raise AssertionError(f"worker {worker.log_path.name} exited unexpectedly; log:\n{worker.log_tail()}")
        time.sleep(0.25)
    return condition()


def safe_stats(settings: Settings) -> PipelineStats | None:
    """Return the Redis counters, or None while Redis is unreachable."""
    import redis

    try:
        return pipeline_stats(settings)
    except (redis.RedisError, OSError):
        return None


def conversions_done(settings: Settings) -> int:
    stats = safe_stats(settings)
    return -1 if stats is None else stats.conversions_done


@dataclass
class Outcome:
    """What a run ended with, read from Redis and the output topics."""

    stats: PipelineStats
    latest: dict[str, dict[str, Any]]
    attribution_ids: list[str]
    dead_letters: list[dict[str, Any]]
    completed: bool
    problems: list[str] = field(default_factory=list)


def _figure_problems(latest: dict[str, dict[str, Any]], expected: Expected) -> list[str]:
    problems: list[str] = []
    missing = sorted(expected.campaigns - set(latest))
    extra = sorted(set(latest) - expected.campaigns)
    if missing:
        problems.append(f"no lifetime roi-update for campaign(s) {missing}")
    if extra:
        problems.append(f"roi-updates for unexpected campaign(s) {extra}")
    for campaign_id in sorted(expected.campaigns & set(latest)):
        update = latest[campaign_id]
        spend = expected.spend.get(campaign_id, Decimal(0))
        if Decimal(update["spend"]) != spend:
            problems.append(f"{campaign_id}: spend {update['spend']} != {spend}")
        margin = expected.margin.get(campaign_id)
        for model in ATTRIBUTION_MODELS:
            conversions, revenue = expected.models[model].get(campaign_id, (Decimal(0), Decimal(0)))
            figures = update["models"][model]
            for name, want in (("conversions", conversions), ("revenue", revenue)):
                got = Decimal(figures[name])
                if abs(got - want) > TOLERANCE:
                    problems.append(f"{campaign_id} {model} {name}: {got} != {want} (off by {got - want})")
            metrics = roi_metrics(revenue, conversions, spend, margin)
            for name in ("roi", "roas", "cpa"):
                want_metric = getattr(metrics, name)
                got_text = figures[name]
                if (got_text is None) != (want_metric is None) or (
                    want_metric is not None and abs(Decimal(got_text) - want_metric) > TOLERANCE
                ):
                    problems.append(f"{campaign_id} {model} {name}: {got_text} != {want_metric}")
    return problems


def _stats_problems(stats: PipelineStats, expected: PipelineStats, extra_dead_letters: int) -> list[str]:
    problems = []
    for name in PipelineStats.__dataclass_fields__:
        want = getattr(expected, name) + (extra_dead_letters if name == "dead_letters" else 0)
        got = getattr(stats, name)
        if got != want:
            problems.append(f"stats {name}: {got} != {want}")
    return problems


def collect_outcome(
    settings: Settings,
    expected: Expected,
    workers: Sequence[WorkerProcess],
    timeout_s: float = 240.0,
    extra_dead_letters: int = 0,
) -> Outcome:
    """Wait for every conversion and the final roi-updates, then compare everything with ``expected``.

    ``extra_dead_letters`` is the number of dead letters that the test itself caused on the
    person topics, for example with poison messages. Returns the outcome with a list of
    every difference; an empty list means the run equals a clean run exactly.
    """
    target = expected.stats.conversions_done
    completed = wait_progress(lambda: conversions_done(settings) >= target, timeout_s, workers)
    problems: list[str] = []
    if not completed:
        problems.append(
            f"timed out after {timeout_s:.0f} s with {conversions_done(settings)} of {target} conversions done"
        )

    # The ROI agent publishes each changed campaign at most every roi_update_interval_s, so
    # the last credits may need a moment to show; poll until the figures match or time runs out.
    deadline = time.monotonic() + 30.0
    while True:
        latest = latest_by_campaign(read_topic(settings, settings.topic_roi_updates, idle_s=1.0, max_wait_s=120))
        figure_problems = _figure_problems(latest, expected)
        if not figure_problems or time.monotonic() > deadline:
            break
        time.sleep(2.0)
    problems.extend(figure_problems)

    stats = pipeline_stats(settings)
    problems.extend(_stats_problems(stats, expected.stats, extra_dead_letters))

    attributions = read_topic(settings, settings.topic_attributions, idle_s=1.0, max_wait_s=120)
    attribution_ids = [attribution["conversion_id"] for attribution in attributions]
    unique_ids = set(attribution_ids)
    if unique_ids != expected.conversion_ids:
        lost = len(expected.conversion_ids - unique_ids)
        unknown = len(unique_ids - expected.conversion_ids)
        problems.append(f"attributions: {lost} conversion(s) without an attribution, {unknown} unknown conversion id(s)")
    dead_letters = read_topic(settings, settings.topic_dead_letters, idle_s=1.0, max_wait_s=120)
    return Outcome(stats, latest, attribution_ids, dead_letters, completed, problems)


def assert_exact(outcome: Outcome, allow_dead_letters: int = 0) -> None:
    """Fail with every difference between the run and a clean run."""
    problems = list(outcome.problems)
    if len(outcome.dead_letters) != allow_dead_letters:
        reasons = sorted({letter["reason"] for letter in outcome.dead_letters})
        problems.append(f"{len(outcome.dead_letters)} dead letter(s), expected {allow_dead_letters}; reasons {reasons}")
    assert not problems, f"{len(problems)} difference(s) from the clean run:\n" + "\n".join(problems[:40])


def assert_clean_logs(workers: Sequence[WorkerProcess]) -> None:
    for worker in workers:
        text = worker.log_text()
        assert "Traceback" not in text, f"{worker.log_path.name} logged a traceback:\n{text[-6000:]}"


def describe_timings(label: str, replay: ReplayThread, finished_s: float) -> str:
    return f"{label}: replay {replay.elapsed_s if replay.finished_s is None else replay.finished_s - replay.started_s:.1f} s, " \
           f"pipeline done {finished_s - replay.started_s:.1f} s after the replay started"
