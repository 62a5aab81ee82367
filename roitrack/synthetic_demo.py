"""``roitrack demo --synthetic``: a seeded day of social traffic, end to end, checked against its ground truth.

It starts the same services as the journey demo (``roitrack.demo``), produces
the definitions of ``roitrack.synthetic.generate`` and waits until the worker
has registered the deals, then produces the day's traffic. It shows ROI,
engagement, referrals and deal events live, and ends once the lifetime
updates in ``roi-updates`` equal the generator's ground truth, or when the
timeout passes.
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from roitrack.connections import SyncRedisClient
from roitrack.demo import RoiBoard, build_summary, roi_table, start_services
from roitrack.replay import Replayer, make_producer
from roitrack.settings import Settings
from roitrack.synthetic import compare, generate, ground_truth
from streams.state import Keys


@dataclass(frozen=True)
class SyntheticOptions:
    seed: int
    people: int
    summary_path: Path | None
    ground_truth_path: Path | None
    batch_size: int
    rate_per_s: float
    keep_state: bool
    timeout_s: float


_DEAL_EVENT_TEXT = {
    "deal_activated": "activated / geactiveerd",
    "deal_expired": "expired / verlopen",
    "advocate_reward": "advocate reward / beloning ambassadeur",
}


def social_table(board: RoiBoard, title: str) -> Table:
    """Engagement, referrals and deals per campaign, with English and Dutch headers."""
    table = Table(title=title, title_justify="left")
    headers = (
        ("campaign", "campagne"), ("engaged", "interacties"), ("rate", "ratio"), ("cost/eng.", "kosten/int."),
        ("followers+", "volgers+"), ("referred", "verwezen"), ("new cust.", "nieuwe klanten"),
        ("ref. revenue", "omzet verw."), ("deals", "groepsdeals"),
    )
    for english, dutch in headers:
        numeric = english not in ("campaign", "deals")
        table.add_column(f"{english}\n{dutch}", justify="right" if numeric else "left", no_wrap=numeric)
    for campaign_id, update in sorted(board.snapshot().items()):
        engagement = update.get("engagement") or {}
        referrals = update.get("referrals") or {}
        deals = "\n".join(f"{deal['deal_id']}: {deal['status']}" for deal in update.get("deals") or [])
        table.add_row(
            campaign_id,
            str(engagement.get("total", "-")),
            _percent(engagement.get("engagement_rate")),
            _money(engagement.get("cost_per_engagement")),
            str(engagement.get("follower_growth", "-")),
            str(referrals.get("referred_people", "-")),
            str(referrals.get("new_customers", "-")),
            _money(referrals.get("revenue")),
            deals or "-",
        )
    return table


def _percent(text: str | None) -> str:
    return "-" if text is None else f"{Decimal(text) * 100:,.2f}%"


def _money(text: str | None) -> str:
    return "-" if text is None else f"{Decimal(text):,.2f}"


def _deals_registered(client: SyncRedisClient, settings: Settings, deal_ids: list[str]) -> bool:
    values = client.hmget(Keys(settings.redis_namespace).deals(), deal_ids)
    return all(value is not None for value in values)


def run_synthetic_demo(options: SyntheticOptions) -> int:
    console = Console()
    started = time.monotonic()
    day = generate(options.seed, options.people)
    console.print(
        f"generated a synthetic day with seed {options.seed}: {len(day.definitions)} definitions and reports, "
        f"{len(day.traffic)} traffic events"
    )
    with ExitStack() as stack:
        services = start_services(stack, console, options.keep_state)
        settings = services.settings
        truth = ground_truth(day, settings.top_advocates, settings.advocate_reward_min_buyers)
        truth_path = options.ground_truth_path or services.worker_dir / "ground-truth.json"
        truth_path.parent.mkdir(parents=True, exist_ok=True)
        truth_path.write_bytes(orjson.dumps({"seed": options.seed, "people": options.people, "campaigns": truth},
                                            option=orjson.OPT_INDENT_2) + b"\n")
        console.print(f"ground truth written to {truth_path}")

        board = RoiBoard(settings)
        board.start()
        stack.callback(board.stop)
        producer = make_producer(settings)
        stack.callback(producer.close)
        replayer = Replayer(settings, producer, batch_size=options.batch_size, rate_per_s=options.rate_per_s)

        replayer.replay((orjson.dumps(event), event) for event in day.definitions)
        deal_ids = sorted({event["deal_id"] for event in day.definitions if event["type"] == "deal"})
        registration_deadline = time.monotonic() + options.timeout_s
        while not _deals_registered(services.client, settings, deal_ids):
            if services.worker.poll() is not None or time.monotonic() > registration_deadline:
                console.print(f"[red]the worker did not register the deals {deal_ids}; see {services.worker_log}[/]")
                return 1
            time.sleep(0.2)

        def screen(status: str) -> Group:
            return Group(
                roi_table(board, f"ROI per campaign (last touch, lifetime) - {status}"),
                social_table(board, "Engagement, referrals and deals / interacties, verwijzingen en groepsdeals"),
            )

        differences: list[str] = []
        with Live(screen("replaying"), console=console, refresh_per_second=4) as live:
            ticker_stop = threading.Event()

            def tick() -> None:
                while not ticker_stop.wait(0.5):
                    live.update(screen("replaying"))

            ticker = threading.Thread(target=tick, daemon=True)
            ticker.start()
            replay_started = time.monotonic()
            try:
                replayer.replay((orjson.dumps(event), event) for event in day.traffic)
            finally:
                ticker_stop.set()
                ticker.join()
            replay_s = time.monotonic() - replay_started
            # The timeout counts from the end of the replay, so a rate limit does not use it up.
            deadline = time.monotonic() + options.timeout_s
            while True:
                if services.worker.poll() is not None:
                    console.print(f"[red]the worker exited with code {services.worker.returncode}; see {services.worker_log}[/]")
                    return 1
                differences = compare(truth, board.snapshot())
                live.update(screen(f"{len(differences)} figure(s) differ from the ground truth"))
                if not differences or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            live.update(screen("done" if not differences else "timed out"))
        console.print()

        for event in board.deal_event_list():
            advocate_text = f" for {event['advocate_id']}" if event["type"] == "advocate_reward" else ""
            console.print(f"deal {event['deal_id']}: {_DEAL_EVENT_TEXT[event['type']]}{advocate_text}")
        if differences:
            console.print(f"[red]{len(differences)} figure(s) differ from the ground truth after {options.timeout_s:.0f} s:[/]")
            for difference in differences[:30]:
                console.print(f"  {difference}")
        else:
            console.print("[green]the engagement, referral and deal figures equal the ground truth[/]")

        if options.summary_path is not None:
            summary = build_summary(board, {
                "dataset": f"synthetic seed {options.seed}",
                "events": len(day.events),
                "replay_s": round(replay_s, 3),
                "wall_time_s": round(time.monotonic() - started, 3),
            })
            summary["synthetic"] = _synthetic_summary(options, board, truth_path, differences)
            options.summary_path.parent.mkdir(parents=True, exist_ok=True)
            options.summary_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
            console.print(f"summary written to {options.summary_path}")
    return 1 if differences else 0


def _synthetic_summary(options: SyntheticOptions, board: RoiBoard, truth_path: Path, differences: list[str]) -> dict[str, Any]:
    return {
        "seed": options.seed,
        "people": options.people,
        "ground_truth": str(truth_path),
        "differences": differences,
        "campaigns": {
            campaign_id: {name: update.get(name) for name in ("spend", "engagement", "referrals", "deals")}
            for campaign_id, update in sorted(board.snapshot().items())
        },
        "deal_events": board.deal_event_list(),
    }
