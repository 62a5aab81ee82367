"""Generate docs/settings.md from ``roitrack.settings.Settings`` and ``streams.app.faust_config``.

Run from the repository root with the project installed in .venv:

    .venv/bin/python tools/gen_settings_doc.py           # rewrite docs/settings.md
    .venv/bin/python tools/gen_settings_doc.py --check   # exit 1 when the file is out of date

The settings table comes from ``Settings.model_fields``: names, defaults,
descriptions and numeric bounds. Units follow the name suffix (``_s``, ``_ms``,
``_bytes``, ``_share``) or the overrides below. The Faust table lists every key
that ``faust_config`` sets, with the reason recorded in ``FAUST_REASONS``.
Adding a key to ``faust_config`` without a reason here makes this script fail.
"""

from __future__ import annotations

import argparse
import sys
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from roitrack.settings import ENV_PREFIX, Settings, load_settings

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
_SECONDS_PER_DAY = 86400
_SECONDS_PER_HOUR = 3600

#: Units of fields whose name suffix and type do not give one.
UNIT_OVERRIDES: dict[str, str] = {
    "kafka_bootstrap": "host:port list, comma-separated",
    "kafka_security_protocol": "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL",
    "kafka_sasl_mechanism": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
    "kafka_sasl_username": "user name",
    "kafka_sasl_password": "password (secret)",
    "kafka_ssl_cafile": "path of a PEM file",
    "kafka_ssl_certfile": "path of a PEM file",
    "kafka_ssl_keyfile": "path of a PEM file",
    "redis_url": "URL",
    "redis_ssl_cafile": "path of a PEM file",
    "redis_namespace": "key prefix",
    "person_partitions": "partitions",
    "campaign_partitions": "partitions",
    "replication_factor": "replicas",
    "engagement_touch_kinds": "list of touch kinds, comma-separated",
    "max_touchpoints_per_person": "touchpoints",
    "reporting_currency": "ISO 4217 code",
    "roi_windows_s": "seconds, comma-separated list",
    "app_id": "name",
    "batch_max_events": "messages",
    "data_dir": "path",
    "web_port": "TCP port",
    "alerts_auto_offset_reset": "latest or earliest",
    "alerts_webhook_urls": "URL list, comma-separated (secret)",
    "alerts_webhook_max_attempts": "attempts",
    "web_bind": "IP address or host name",
    "api_tokens": "token list, comma-separated (secret)",
    "log_format": "text or json",
}

#: Settings behind a ``faust_config`` key that ``faust_dependencies`` cannot find,
#: because no single-field change of them passes validation.
FAUST_SOURCES: dict[str, list[str]] = {
    "broker_credentials": ["kafka_security_protocol", "kafka_sasl_*", "kafka_ssl_*"],
}

#: Reason for each setting that ``streams.app.faust_config`` passes to Faust.
FAUST_REASONS: dict[str, str] = {
    "broker": "The servers of `ROITRACK_KAFKA_BOOTSTRAP` with the `kafka://` scheme that Faust expects.",
    "broker_credentials": (
        "SSL or SASL credentials from `roitrack.connections.faust_broker_credentials`, or none "
        "for PLAINTEXT. Faust's producer and consumer both use them."
    ),
    "store": "roitrack uses no Faust tables. All state is in Redis.",
    "key_serializer": "Keys reach roitrack as bytes.",
    "value_serializer": (
        "Values reach roitrack's own decoder as bytes, so invalid input goes to the "
        "dead-letter topic with the reason instead of raising a decode error inside Faust."
    ),
    "topic_partitions": (
        "Partition count of topics that Faust declares. Faust declares none here "
        "(see `topic_allow_declare`), so this only keeps the value consistent."
    ),
    "topic_allow_declare": (
        "`roitrack topics create` creates the topics and checks their partition "
        "counts, so a worker never creates a topic with the wrong count."
    ),
    "topic_disable_leader": (
        "No `<app id>-__assignor-__leader` topic, because roitrack has no "
        "leader-only timers: its timers run on every worker for the partitions it owns."
    ),
    "table_standby_replicas": (
        "Kept at Faust's default of 1 on purpose: faust-streaming 0.15 uses its own "
        "co-partitioning assignor only when this is above 0 (or the app has tables), and "
        "roitrack needs partition N of touchpoints and conversions on the same worker."
    ),
    "stream_wait_empty": (
        "Kept on: at shutdown the worker finishes the batch in hand, because Faust's "
        "take_events acknowledges a batch whose handler is cancelled. A batch that cannot "
        "finish because Redis is down makes the worker exit without a commit instead."
    ),
    "consumer_auto_offset_reset": (
        "A new consumer group starts at the beginning of every topic, so events "
        "produced before the first worker started are processed."
    ),
    "broker_session_timeout": (
        "From the settings, so a deployment can trade how fast a dead worker is "
        "noticed against rebalances caused by short pauses."
    ),
    "broker_heartbeat_interval": "From the settings. It must stay below the session timeout.",
    "broker_commit_interval": (
        "Seconds between offset commits to Kafka. The offsets stored in Redis "
        "decide what counts, so this only bounds how many messages a restarted "
        "worker reads again and skips."
    ),
    "producer_acks": (
        "A send completes once all in-sync replicas have the message, because dead "
        "letters and credits are sent before the input offsets move."
    ),
    "datadir": (
        "Faust's local directory. roitrack keeps no state there, so it goes under "
        "`ROITRACK_DATA_DIR`, or the system temp directory when that is empty, "
        "instead of the working directory."
    ),
    "web_enabled": "Faust's web server is off unless `ROITRACK_WEB_ENABLED` is true.",
    "web_port": "Port of the worker's web server.",
    "web_bind": (
        "Faust's own default binds every interface. roitrack binds `ROITRACK_WEB_BIND`, "
        "the loopback interface unless set."
    ),
}


def env_names(name: str, field: FieldInfo) -> list[str]:
    """Return the environment variables of a field, the primary one first."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [f"{ENV_PREFIX}{name.upper()}"]


def unit_of(name: str, field: FieldInfo) -> str:
    """Name the unit of a field: an override, else its name suffix, else its type."""
    if name in UNIT_OVERRIDES:
        return UNIT_OVERRIDES[name]
    if name.endswith("_s"):
        return "seconds"
    if name.endswith("_ms"):
        return "milliseconds"
    if name.endswith("_bytes"):
        return "bytes"
    if name.endswith("_share"):
        return "fraction (0-1)"
    if field.annotation is bool:
        return "true or false"
    if name.startswith("topic_"):
        return "topic name"
    if field.annotation is str:
        return "text"
    if get_origin(field.annotation) is tuple:
        return "text, comma-separated list"
    return "number"


def _human_seconds(seconds: int) -> str:
    if seconds >= _SECONDS_PER_DAY and seconds % _SECONDS_PER_DAY == 0:
        return f"{seconds // _SECONDS_PER_DAY} d"
    if seconds >= _SECONDS_PER_HOUR and seconds % _SECONDS_PER_HOUR == 0:
        return f"{seconds // _SECONDS_PER_HOUR} h"
    return ""


def render_default(name: str, default: Any) -> str:
    """Render a default as it would be written in the environment variable."""
    if isinstance(default, bool):
        text = "true" if default else "false"
    elif isinstance(default, frozenset):
        text = ",".join(sorted(str(part) for part in default))
    elif isinstance(default, tuple):
        text = ",".join(str(part) for part in default)
    elif isinstance(default, Decimal):
        text = format(default, "f")
    else:
        text = str(default)
    if text == "":
        return "(empty)"
    rendered = f"`{text}`"
    if name.endswith("_s") and isinstance(default, int) and not isinstance(default, bool):
        human = _human_seconds(default)
        if human:
            rendered += f" ({human})"
    if name.endswith("_s") and isinstance(default, tuple):
        humans = [_human_seconds(part) or f"{part} s" for part in default]
        rendered += f" ({', '.join(humans)})"
    return rendered


def bounds_of(field: FieldInfo) -> str:
    """Describe the numeric bounds and pattern of a field, or return ''."""
    parts = []
    for item in field.metadata:
        if isinstance(item, Ge):
            parts.append(f">= {item.ge}")
        elif isinstance(item, Gt):
            parts.append(f"> {item.gt}")
        elif isinstance(item, Le):
            parts.append(f"<= {item.le}")
        elif isinstance(item, Lt):
            parts.append(f"< {item.lt}")
        else:
            pattern = getattr(item, "pattern", None)
            if pattern:
                parts.append(f"matches `{pattern}`")
    return f"Valid: {', '.join(parts)}." if parts else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_rows() -> list[str]:
    rows = [
        "| environment variable | unit | default | description |",
        "|---|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        names = env_names(name, field)
        variable = f"`{names[0]}`"
        if len(names) > 1:
            variable += " (fallback: " + ", ".join(f"`{other}`" for other in names[1:]) + ")"
        description = " ".join(part for part in (field.description or "", bounds_of(field)) if part)
        rows.append(
            f"| {variable} | {_cell(unit_of(name, field))} | {_cell(render_default(name, field.default))} "
            f"| {_cell(description)} |"
        )
    return rows


def _varied_value(value: Any) -> Any:
    """Return another valid-looking value of the same type, or None when there is none."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "x"
    return None


def faust_dependencies(base: Settings) -> dict[str, list[str]]:
    """Find the settings each ``faust_config`` key depends on, by changing one field at a time."""
    from pydantic import ValidationError

    from streams.app import faust_config

    reference = faust_config(base)
    dependencies: dict[str, list[str]] = {key: [] for key in reference}
    for name in Settings.model_fields:
        varied = _varied_value(getattr(base, name))
        if varied is None:
            continue
        try:
            changed = load_settings(**{**base.model_dump(), name: varied})
        except ValidationError:
            continue  # no valid variation of this type, so it cannot feed faust_config
        config = faust_config(changed)
        for key, value in config.items():
            if value != reference[key]:
                dependencies[key].append(name)
    return dependencies


def _render_faust_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(part) for part in value)
    return str(value)


def faust_rows() -> list[str]:
    import faust

    from streams.app import faust_config

    base = load_settings(kafka_bootstrap="127.0.0.1:9092")
    config = faust_config(base)
    missing = sorted(set(config) - set(FAUST_REASONS))
    if missing:
        raise SystemExit(
            f"faust_config sets {missing}, which have no reason in FAUST_REASONS of {__file__}; "
            "add one line per key and run again."
        )
    stale = sorted(set(FAUST_REASONS) - set(config))
    if stale:
        raise SystemExit(
            f"FAUST_REASONS in {__file__} lists {stale}, which faust_config no longer sets; remove them."
        )

    dependencies = {**faust_dependencies(base), **FAUST_SOURCES}
    faust_defaults = faust.App(Settings.model_fields["app_id"].default).conf
    rows = [
        "| Faust setting | value in roitrack | Faust default | why |",
        "|---|---|---|---|",
    ]
    for key, value in config.items():
        sources = dependencies[key]
        if sources:
            value_text = "from " + ", ".join(f"`{ENV_PREFIX}{source.upper()}`" for source in sources)
        else:
            value_text = f"`{_render_faust_value(value)}`"
        default = f"`{_render_faust_value(getattr(faust_defaults, key))}`"
        rows.append(f"| `{key}` | {value_text} | {default} | {_cell(FAUST_REASONS[key])} |")
    return rows


def render() -> str:
    """Render the whole of docs/settings.md."""
    faust_version = version("faust-streaming")
    lines = [
        "# Settings",
        "",
        "<!-- Generated by tools/gen_settings_doc.py; edit the Settings fields or that script, not this file. -->",
        "",
        "This file is generated from `roitrack.settings.Settings` by",
        "`tools/gen_settings_doc.py`. Do not edit it by hand: change the field in",
        "`roitrack/settings.py`, then regenerate it from the repository root with",
        "",
        "```sh",
        ".venv/bin/python tools/gen_settings_doc.py",
        "```",
        "",
        "Every setting is read once at start-up from an environment variable with the",
        f"`{ENV_PREFIX}` prefix; the settings object is frozen afterwards. `roitrack settings`",
        "prints the same list, and an invalid value stops the command with the variable",
        "name and the reason. Lists are comma-separated. Booleans accept `true`/`false`",
        "(also `1`/`0`, `yes`/`no`).",
        "",
        "## roitrack settings",
        "",
        *settings_rows(),
        "",
        "`Settings` also checks these rules at start-up:",
        "",
        "- `ROITRACK_POSITION_FIRST_SHARE` + `ROITRACK_POSITION_LAST_SHARE` must be at most 1;",
        "  the middle touches of the position-based model share the rest.",
        "- `ROITRACK_CONSUMER_HEARTBEAT_S` must be lower than `ROITRACK_CONSUMER_SESSION_TIMEOUT_S`.",
        "- Each of `ROITRACK_ROI_WINDOWS_S` must be a whole number of minutes, at least 60 s.",
        "- `ROITRACK_ENGAGEMENT_TOUCH_KINDS` may only contain `like`, `share`, `comment`, `follow`.",
        "- `ROITRACK_REPORTING_CURRENCY` must be a known ISO 4217 code (`schemas/currencies.py`),",
        "  not only three capital letters.",
        "- When `ROITRACK_KAFKA_SECURITY_PROTOCOL` is SASL_PLAINTEXT or SASL_SSL,",
        "  `ROITRACK_KAFKA_SASL_MECHANISM`, `ROITRACK_KAFKA_SASL_USERNAME` and",
        "  `ROITRACK_KAFKA_SASL_PASSWORD` must be set. The other protocols reject them, and",
        "  PLAINTEXT and SASL_PLAINTEXT reject the `ROITRACK_KAFKA_SSL_*` files, because the",
        "  clients would ignore them.",
        "- `ROITRACK_KAFKA_SSL_KEYFILE` needs `ROITRACK_KAFKA_SSL_CERTFILE`.",
        "- Every file setting (`ROITRACK_KAFKA_SSL_*`, `ROITRACK_REDIS_SSL_CAFILE`) must name a",
        "  readable file when it is set.",
        "- `ROITRACK_REDIS_URL` must start with `redis://`, `rediss://` or `unix://`.",
        "  `ROITRACK_REDIS_SSL_CAFILE` needs `rediss://`, and `ROITRACK_REDIS_CLUSTER=true`",
        "  needs `redis://` or `rediss://` with database 0.",
        "- Each of `ROITRACK_ALERTS_WEBHOOK_URLS` must be an `http://` or `https://` URL with a",
        "  host name. The error names its position in the list, never the URL.",
        "",
        "`ROITRACK_PERSON_PARTITIONS` and `ROITRACK_CAMPAIGN_PARTITIONS` cannot change once",
        "the topics exist, because keys are hashed to partitions by count and the Redis",
        "state is stored per partition. `roitrack topics create` stops with an error when",
        "an existing topic has another partition count.",
        "",
        "## Faust settings that roitrack sets",
        "",
        "`streams/app.py` (`faust_config`) passes these to `faust.App`; they are not",
        "configurable through the environment except where a `ROITRACK_` variable is named.",
        f"The Faust defaults are those of faust-streaming {faust_version}.",
        "",
        *faust_rows(),
        "",
        "`streams.app.create_faust_app` also replaces Faust's consumer transport with",
        "`streams/kafka_transport.py`, which creates the aiokafka consumer with",
        "`fetch_max_wait_ms` from `ROITRACK_CONSUMER_FETCH_MAX_WAIT_MS`. Faust",
        f"{faust_version} has no setting for it and creates its worker consumer with 1500 ms. The",
        "producer and every other consumer option stay Faust's.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate docs/settings.md from the Settings model.")
    parser.add_argument("--check", action="store_true", help="exit 1 when docs/settings.md is out of date")
    parser.add_argument("--output", type=Path, default=DOC_PATH, help=f"file to write (default: {DOC_PATH})")
    args = parser.parse_args(argv)

    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(
                f"{args.output} is out of date; run `.venv/bin/python tools/gen_settings_doc.py`",
                file=sys.stderr,
            )
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
