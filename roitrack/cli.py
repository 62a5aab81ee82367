"""The ``roitrack`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import ValidationError

from roitrack.settings import ENV_PREFIX, Settings, load_settings
from roitrack.synthetic import DEFAULT_PEOPLE
from schemas.outputs import DEAD_LETTER_REASONS, LIST_REASONS, UNREADABLE_REASON

log = logging.getLogger("roitrack")

DATA_DIR = Path(__file__).parent / "data"
JOURNEYS_FILE = DATA_DIR / "journeys.csv.gz"
CAMPAIGNS_FILE = DATA_DIR / "campaigns.toml"
#: Seed of `roitrack demo --synthetic` unless --seed gives one.
SYNTHETIC_SEED = 1


def settings_table() -> str:
    """Render every setting with its variable, default and description."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, (frozenset, tuple)):
            default = ",".join(str(part) for part in sorted(default))
        lines.append(f"  {ENV_PREFIX}{name.upper()}  (default: {default!s})\n      {field.description}")
    return "\n".join(lines)


def _configure_logging(level: str) -> None:
    from roitrack.logs import configure_logging, log_format_from_environment

    configure_logging(level, log_format_from_environment())


def _load(overrides: dict[str, object] | None = None) -> Settings:
    try:
        return load_settings(**(overrides or {}))
    except ValidationError as exc:
        problems = "; ".join(_describe_error(error) for error in exc.errors())
        raise SystemExit(f"invalid settings: {problems}. Fix the environment variable(s) and run again.") from None


def _describe_error(error: Any) -> str:
    """Describe one settings error without the value of a secret setting."""
    location = [str(part) for part in error["loc"]]
    if not location:
        # A rule over several settings: its input is every setting, secrets included,
        # and its message names the variables itself.
        return str(error["msg"]).rstrip(".")
    field = Settings.model_fields.get(location[0])
    value = "(secret, not shown)" if field is not None and field.repr is False else repr(error.get("input"))
    return f"{ENV_PREFIX}{'.'.join(location).upper()}={value}: {str(error['msg']).rstrip('.')}"


def _cmd_worker(args: argparse.Namespace) -> int:
    from roitrack.worker import run_worker

    run_worker(_load(), loglevel=args.log_level)
    return 0


def _cmd_topics(args: argparse.Namespace) -> int:
    from roitrack.topics import create_topics

    settings = _load()
    created = create_topics(settings, settings.require_kafka())
    print(f"created {len(created)} topic(s): {', '.join(created) or 'none (all existed)'}")
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError

    from roitrack.replay import campaign_events, make_producer, read_events, Replayer
    from roitrack.progress import replay_with_progress

    settings = _load()
    path = Path(args.file)
    if not path.is_file():
        raise SystemExit(f"replay file not found or not a file: {path}")
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.rate < 0:
        raise SystemExit(f"--rate must be 0 (no limit) or a positive number of events per second, got {args.rate}")
    if args.campaigns and not Path(args.campaigns).is_file():
        raise SystemExit(f"--campaigns file not found or not a file: {args.campaigns}")
    try:
        producer = make_producer(settings)
    except KafkaError as exc:
        raise SystemExit(
            f"no Kafka broker reachable at {settings.kafka_bootstrap} ({exc}); start the broker, or point "
            "ROITRACK_KAFKA_BOOTSTRAP at a running one"
        ) from None
    try:
        replayer = Replayer(settings, producer, batch_size=args.batch_size, rate_per_s=args.rate)
        definitions = 0
        if args.campaigns:
            definitions = replayer.replay(campaign_events(Path(args.campaigns))).events
        stats = replay_with_progress(replayer, read_events(path), label=path.name)
    finally:
        producer.close()
    # The replayer's counts include the campaign definitions produced first.
    first = f"{definitions} campaign definition(s) from {Path(args.campaigns).name}, then " if args.campaigns else ""
    print(
        f"replayed {first}{stats.events - definitions} events from {path.name} in {stats.messages} messages "
        f"({stats.conversions} conversions, {stats.unroutable} unroutable) in {stats.elapsed_s:.1f} s"
    )
    if stats.unroutable:
        print(
            f"{stats.unroutable} unroutable line(s) (not JSON, not an object, or an unknown type) went to "
            f"{settings.topic_touchpoints} unchanged; the worker puts each in {settings.topic_dead_letters} "
            "with its reason (see `roitrack deadletters list`)"
        )
    if stats.too_large:
        print(
            f"{stats.too_large} message(s) were over the producer's maximum request size and were not sent; "
            "split those events or raise the broker's and producer's message size limits"
        )
        return 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from roitrack.demo import DemoOptions, run_demo

    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.rate < 0:
        raise SystemExit(f"--rate must be 0 (no limit) or a positive number of events per second, got {args.rate}")
    if args.timeout <= 0:
        raise SystemExit(f"--timeout must be a positive number of seconds, got {args.timeout}")
    journey_options = [name for name, value in (("--journeys", args.journeys), ("--campaigns", args.campaigns))
                       if value is not None]
    synthetic_options = [name for name, value in (("--seed", args.seed), ("--people", args.people),
                                                  ("--ground-truth", args.ground_truth)) if value is not None]
    if args.synthetic:
        if journey_options:
            raise SystemExit(f"{_options_apply(journey_options)} only to the journey dataset, not with --synthetic; "
                             f"leave {_it_or_them(journey_options)} out, or drop --synthetic")
        return _synthetic_demo(args)
    if synthetic_options:
        raise SystemExit(f"{_options_apply(synthetic_options)} only with --synthetic; add --synthetic, "
                         f"or leave {_it_or_them(synthetic_options)} out")
    journeys = args.journeys if args.journeys is not None else str(JOURNEYS_FILE)
    campaigns = args.campaigns if args.campaigns is not None else str(CAMPAIGNS_FILE)
    for option, value in (("--journeys", journeys), ("--campaigns", campaigns)):
        if not Path(value).is_file():
            raise SystemExit(f"{option} file not found: {value}")
    options = DemoOptions(
        summary_path=Path(args.summary) if args.summary else None,
        batch_size=args.batch_size,
        rate_per_s=args.rate,
        keep_state=args.keep_state,
        timeout_s=args.timeout,
        journeys=Path(journeys),
        campaigns=Path(campaigns),
    )
    return run_demo(options)


def _options_apply(options: list[str]) -> str:
    """Return "--a applies" or "--a and --b apply", for an error message."""
    return f"{' and '.join(options)} {'applies' if len(options) == 1 else 'apply'}"


def _it_or_them(options: list[str]) -> str:
    return "it" if len(options) == 1 else "them"


def _synthetic_demo(args: argparse.Namespace) -> int:
    from roitrack.synthetic_demo import SyntheticOptions, run_synthetic_demo

    if args.ground_truth is not None and not args.ground_truth.strip():
        raise SystemExit("--ground-truth needs a file path, got an empty value")
    people = args.people if args.people is not None else DEFAULT_PEOPLE
    if people < 40:
        raise SystemExit(f"--people must be at least 40, got {people}")
    options = SyntheticOptions(
        seed=args.seed if args.seed is not None else SYNTHETIC_SEED,
        people=people,
        summary_path=Path(args.summary) if args.summary else None,
        ground_truth_path=Path(args.ground_truth) if args.ground_truth else None,
        batch_size=args.batch_size,
        rate_per_s=args.rate,
        keep_state=args.keep_state,
        timeout_s=args.timeout,
    )
    return run_synthetic_demo(options)


def _cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.export import write_json_schemas

    written = write_json_schemas(Path(args.out))
    print(f"wrote {len(written)} JSON Schema file(s) to {args.out}")
    return 0


def _cmd_deadletters_list(args: argparse.Namespace) -> int:
    from roitrack.deadletters import DeadLettersError, format_dead_letters, read_dead_letters

    settings = _load()
    settings.require_kafka()
    try:
        records = read_dead_letters(settings, reason=args.reason, source_topic=args.source_topic, limit=args.limit)
    except DeadLettersError as exc:
        raise SystemExit(str(exc)) from None
    print(format_dead_letters(records, as_json=args.json))
    return 0


def _cmd_deadletters_redrive(args: argparse.Namespace) -> int:
    from roitrack.deadletters import DeadLettersError, format_redrive_report, redrive

    settings = _load()
    settings.require_kafka()
    try:
        report = redrive(
            settings,
            reason=args.reason,
            source_topic=args.source_topic,
            to_topic=args.to_topic,
            dry_run=args.dry_run,
            from_beginning=args.from_beginning,
            group_id=args.group,
        )
    except DeadLettersError as exc:
        raise SystemExit(str(exc)) from None
    print(format_redrive_report(report))
    return 0


def _cmd_collector(args: argparse.Namespace) -> int:
    from roitrack.collector import run_collector

    settings = _load()
    settings.require_kafka()
    run_collector(settings)
    return 0


def _cmd_alerts(args: argparse.Namespace) -> int:
    import signal
    import threading

    from roitrack.alerts import AlertsError, RulesError, default_group, load_rules, run_alerts

    settings = _load()
    settings.require_kafka()
    try:
        rules = load_rules(Path(args.rules), settings)
    except RulesError as exc:
        raise SystemExit(str(exc)) from None
    stop = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        log.info("received %s; stopping the alerts consumer", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        run_alerts(settings, rules, args.group or default_group(settings), stop)
    except AlertsError as exc:
        raise SystemExit(str(exc)) from None
    return 0


def parse_report_time(option: str, value: str | None) -> int | None:
    """Parse --since or --until: ISO 8601 with a time zone, or a date meaning 00:00 UTC; returns epoch ms."""
    from datetime import date, datetime, timezone

    if value is None:
        return None
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=timezone.utc)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(
            f"{option} {value!r} is not an ISO 8601 date or time; use for example 2026-11-02 or 2026-11-02T09:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise SystemExit(f"{option} {value!r} has no time zone; add Z for UTC or an offset such as +01:00")
    return int(moment.timestamp() * 1000)


def _cmd_report(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from roitrack.embedded import redacted_url
    from roitrack.history import Period
    from roitrack.i18n import parse_language
    from roitrack.report import write_report
    from roitrack.report.render import describe_period

    try:
        language = parse_language(args.lang)
    except ValueError as exc:
        raise SystemExit(f"--lang: {exc}") from None
    period = Period(parse_report_time("--since", args.since), parse_report_time("--until", args.until))
    if period.start_ms is not None and period.end_ms is not None and period.end_ms <= period.start_ms:
        raise SystemExit(f"--until {args.until} is not after --since {args.since}")
    out = Path(args.out)
    if out.is_dir():
        raise SystemExit(f"--out {args.out} is a folder; name the HTML file to write, such as {out / 'report.html'}")
    settings = _load()
    try:
        result = write_report(settings, out, period, language)
    except RedisError as exc:
        raise SystemExit(
            f"cannot read Redis at {redacted_url(settings.redis_url)}: {str(exc).rstrip('.')}. Check that Redis runs and that "
            "ROITRACK_REDIS_URL points at it"
        ) from None
    except OSError as exc:
        raise SystemExit(f"cannot write --out {args.out}: {exc.strerror or exc}") from None
    if not result.data.campaigns:
        print(
            f"no campaigns found in Redis namespace {settings.redis_namespace!r} at {redacted_url(settings.redis_url)}; "
            "check ROITRACK_REDIS_NAMESPACE and ROITRACK_REDIS_URL, or wait until the worker has applied credits",
            file=sys.stderr,
        )
    print(
        f"wrote {result.path}: {len(result.data.campaigns)} campaign(s), "
        f"period {describe_period(result.data.period, parse_language('en'))}"
    )
    return 0


class _Terminated(Exception):
    """SIGTERM arrived while ``roitrack broker`` was starting the broker."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated


def _cmd_broker(args: argparse.Namespace) -> int:
    import signal
    import threading

    from roitrack.embedded import LOOPBACK_HOST, EmbeddedBroker, EmbeddedServiceError, port_is_free

    if args.port and not port_is_free(args.port):
        raise SystemExit(f"port {LOOPBACK_HOST}:{args.port} is already in use; stop the process that listens "
                         "there, pick another --port, or pass --port 0 to take any free port")
    broker = EmbeddedBroker()
    # Until the broker is up, SIGTERM raises, so that start() stops the child it spawned:
    # the child runs in a session of its own, and nothing else would stop it.
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        bootstrap = broker.start(port=args.port or None)
    except (KeyboardInterrupt, _Terminated) as exc:
        print("interrupted while the broker was starting; nothing is left running", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 143
    except EmbeddedServiceError as exc:
        raise SystemExit(f"the broker did not start: {exc}") from None
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print(
        f"tansu Kafka-protocol broker listening on {bootstrap}, storage in memory: its topics vanish when it stops.\n"
        "In other shells, point roitrack at it (a 6 s session makes consumer-group joins quick on tansu):\n"
        f"  export ROITRACK_KAFKA_BOOTSTRAP={bootstrap} ROITRACK_CONSUMER_SESSION_TIMEOUT_S=6 "
        "ROITRACK_CONSUMER_HEARTBEAT_S=1\n"
        "  roitrack topics create, then roitrack worker, then roitrack replay FILE\n"
        "The worker also needs Redis at ROITRACK_REDIS_URL (default redis://127.0.0.1:6379/0).\n"
        "Press Ctrl-C to stop the broker.",
        flush=True,
    )
    try:
        while broker.running and not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    status = broker.returncode
    tail = broker.log_tail() if status is not None else ""
    broker.stop()
    if status is not None:
        print(f"the broker exited on its own with status {status}; the last lines of its log:\n{tail}",
              file=sys.stderr)
        return 1
    print("stopped the broker")
    return 0


def _tcp_port(text: str) -> int:
    """Parse --port: 0 for any free port, or 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 (any free port) or a TCP port up to 65535, got {port}")
    return port


def _positive_int(text: str) -> int:
    """Parse a count that must be at least 1, such as --limit."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _non_empty(what: str) -> Callable[[str], str]:
    """Return an argparse type that rejects an empty or blank ``what``, such as a topic name."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"needs a {what}, got an empty value")
        return text

    return parse


def _add_deadletter_filters(parser: argparse.ArgumentParser, reasons: Sequence[str], reason_help: str) -> None:
    """Add the --reason and --source-topic filters that both deadletters subcommands take."""
    parser.add_argument("--reason", choices=reasons, metavar="REASON", help=reason_help)
    parser.add_argument(
        "--source-topic", type=_non_empty("topic name"),
        help="only dead letters rejected from this topic ('collector' for the HTTP collector)",
    )


def _add_deadletters(commands: Any) -> None:
    """Add ``deadletters list`` and ``deadletters redrive``, each with only the options it uses."""
    # The reasons come from schemas.outputs because importing roitrack.deadletters
    # here would load the Kafka client for every command.
    dead = commands.add_parser("deadletters", help="list rejected messages, or redrive them after a fix")
    actions = dead.add_subparsers(dest="action", required=True)

    listing = actions.add_parser(
        "list", help="print dead letters, oldest first, read without a consumer group",
    )
    _add_deadletter_filters(listing, LIST_REASONS, (
        f"only dead letters with this reason: {', '.join(DEAD_LETTER_REASONS)}, "
        f"or {UNREADABLE_REASON} for messages that are not dead letters"
    ))
    listing.add_argument(
        "--limit", type=_positive_int, metavar="N",
        help="keep only the newest N matching dead letters, still printed oldest first (default: all)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    listing.set_defaults(handler=_cmd_deadletters_list)

    resend = actions.add_parser(
        "redrive", help="produce matching dead letters' payloads again, keyed as the worker expects",
    )
    _add_deadletter_filters(resend, DEAD_LETTER_REASONS,
                            f"only dead letters with this reason: {', '.join(DEAD_LETTER_REASONS)}")
    resend.add_argument(
        "--to-topic", type=_non_empty("topic name"), help="produce every payload to this topic instead of its own",
    )
    resend.add_argument("--dry-run", action="store_true", help="report what would be sent; send and commit nothing")
    resend.add_argument(
        "--from-beginning", action="store_true",
        help=("start from the first dead letter. Without it, redrive continues after the last run of "
              "the same group, which also committed past the dead letters that did not match that run's filters"),
    )
    resend.add_argument(
        "--group", type=_non_empty("consumer group name"),
        help="consumer group that stores the progress (default: <ROITRACK_APP_ID>-redrive)",
    )
    resend.set_defaults(handler=_cmd_deadletters_redrive)


def _cmd_settings(args: argparse.Namespace) -> int:
    print(settings_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roitrack",
        description="Real-time social-media ROI and attribution on Kafka, Faust and Redis.",
        epilog="Settings (environment variables):\n" + settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"],
        help="log level (default: info)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run the Faust worker (needs ROITRACK_KAFKA_BOOTSTRAP)")
    worker.set_defaults(handler=_cmd_worker)

    broker = commands.add_parser(
        "broker", help="run a local Kafka-protocol broker (tansu, in memory) for a worker and replays, until Ctrl-C",
    )
    broker.add_argument("--port", type=_tcp_port, default=9092,
                        help="TCP port on 127.0.0.1; 0 takes any free port (default: 9092)")
    broker.set_defaults(handler=_cmd_broker)

    topics = commands.add_parser("topics", help="create the topics with their partition counts")
    topics.add_argument("action", choices=["create"])
    topics.set_defaults(handler=_cmd_topics)

    replay = commands.add_parser("replay", help="produce a JSON-lines or journey-CSV file into Kafka")
    replay.add_argument("file", help="events file: .jsonl, or a journey .csv/.csv.gz")
    replay.add_argument("--campaigns", help="campaigns TOML file to produce first (campaigns and spend)")
    replay.add_argument("--batch-size", type=int, default=1, help="events packed per Kafka message (default: 1)")
    replay.add_argument("--rate", type=float, default=0.0, help="maximum events per second; 0 means no limit (default: 0)")
    replay.set_defaults(handler=_cmd_replay)

    demo = commands.add_parser(
        "demo", help="replay the journey dataset, or a synthetic social day, end to end on an embedded broker",
    )
    demo.add_argument("--summary", help="write a JSON summary to this path")
    demo.add_argument("--batch-size", type=int, default=50, help="events packed per Kafka message (default: 50)")
    demo.add_argument("--rate", type=float, default=0.0, help="maximum events per second; 0 means no limit (default: 0)")
    demo.add_argument("--timeout", type=float, default=600.0, help="seconds to wait, once the replay has ended, for the pipeline to finish (default: 600)")
    demo.add_argument("--keep-state", action="store_true", help="keep the demo's Redis keys after it ends")
    demo.add_argument("--journeys", help="journey CSV to replay (default: the bundled dataset)")
    demo.add_argument("--campaigns", help="campaigns TOML with spend and margins (default: the bundled file)")
    demo.add_argument(
        "--synthetic", action="store_true",
        help="replay a generated day of social traffic instead of the journey dataset, and check it against its ground truth",
    )
    demo.add_argument("--seed", type=int, help=f"--synthetic: seed of the generated day (default: {SYNTHETIC_SEED})")
    demo.add_argument("--people", type=int, help=f"--synthetic: people in the crowd, at least 40 (default: {DEFAULT_PEOPLE})")
    demo.add_argument("--ground-truth", help="--synthetic: write the expected figures to this JSON file")
    demo.set_defaults(handler=_cmd_demo)

    schemas = commands.add_parser("schemas", help="export JSON Schema for every event and output model")
    schemas.add_argument("action", choices=["export"])
    schemas.add_argument("--out", default="json-schema", help="output directory (default: ./json-schema)")
    schemas.set_defaults(handler=_cmd_schemas)

    _add_deadletters(commands)

    collector = commands.add_parser(
        "collector", help="run the HTTP collector: tracking pixel, click redirect and batch endpoint"
    )
    collector.set_defaults(handler=_cmd_collector)

    alerts = commands.add_parser(
        "alerts", help="consume roi-updates and send alerts by the rules of a TOML or YAML file (see docs/alerts.md)"
    )
    alerts.add_argument("--rules", required=True, help="rules file: .toml, or .yaml/.yml with PyYAML installed")
    alerts.add_argument(
        "--group",
        help=("consumer group, which also names the alert state in Redis "
              "(default: <ROITRACK_APP_ID>-alerts)"),
    )
    alerts.set_defaults(handler=_cmd_alerts)

    report = commands.add_parser(
        "report", help="write an HTML report of ROI per campaign and attribution model, read from Redis",
    )
    report.add_argument("--out", required=True, help="path of the HTML file to write; missing parent folders are created")
    report.add_argument(
        "--since",
        help="start of the period: ISO 8601 with a time zone, or a date (00:00 UTC); default: no start",
    )
    report.add_argument(
        "--until",
        help="end of the period, exclusive: ISO 8601 with a time zone, or a date (00:00 UTC); default: no end",
    )
    report.add_argument("--lang", default="en", choices=["en", "nl"], help="language of the report (default: en)")
    report.set_defaults(handler=_cmd_report)

    settings = commands.add_parser("settings", help="list every setting with its variable and default")
    settings.set_defaults(handler=_cmd_settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    handler = args.handler
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
