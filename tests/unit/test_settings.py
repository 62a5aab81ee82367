"""Settings in roitrack.settings: environment parsing, validation messages and require_kafka."""

from __future__ import annotations

import os
from decimal import Decimal

import pytest
from pydantic import ValidationError

from roitrack.settings import load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every ROITRACK_* variable and REDIS_URL, so only what a test sets is read."""
    for name in list(os.environ):
        if name.startswith("ROITRACK_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    return monkeypatch


def messages(error: ValidationError) -> str:
    """Join the messages of a ValidationError without pydantic's echo of the input."""
    return "\n".join(detail["msg"] for detail in error.errors())


def error_fields(error: ValidationError) -> list[str]:
    return [".".join(str(part) for part in detail["loc"]) for detail in error.errors()]


# --- defaults ------------------------------------------------------------


def test_defaults_without_env() -> None:
    settings = load_settings()

    assert settings.kafka_bootstrap == ""
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.roi_windows_s == (3600, 86400, 604800)
    assert settings.engagement_touch_kinds == frozenset({"like", "share", "comment", "follow"})


def test_touchpoint_ttl_is_longest_lookback() -> None:
    settings = load_settings(lookback_click_s=100, lookback_view_s=300)

    assert settings.touchpoint_ttl_s == 300


def test_settings_frozen() -> None:
    settings = load_settings()

    with pytest.raises(ValidationError, match="frozen"):
        settings.app_id = "other"


def test_load_settings_overrides_env(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_APP_ID", "from-env")

    settings = load_settings(app_id="from-override")

    assert settings.app_id == "from-override"


def test_env_read_with_prefix(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_LOOKBACK_VIEW_S", "7200")
    clean_env.setenv("ROITRACK_WEB_ENABLED", "true")
    clean_env.setenv("ROITRACK_POSITION_FIRST_SHARE", "0.3")

    settings = load_settings()

    assert settings.lookback_view_s == 7200
    assert settings.web_enabled is True
    assert settings.position_first_share == Decimal("0.3")


def test_env_without_prefix_ignored(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("APP_ID", "unprefixed")

    assert load_settings().app_id == "roitrack"


# --- engagement touch kinds ----------------------------------------------


def test_touch_kinds_comma_list(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_ENGAGEMENT_TOUCH_KINDS", "like,share")

    assert load_settings().engagement_touch_kinds == frozenset({"like", "share"})


def test_touch_kinds_spaces_and_empty_parts(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_ENGAGEMENT_TOUCH_KINDS", " comment , ,follow,")

    assert load_settings().engagement_touch_kinds == frozenset({"comment", "follow"})


def test_touch_kinds_empty_means_none(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_ENGAGEMENT_TOUCH_KINDS", "")

    assert load_settings().engagement_touch_kinds == frozenset()


def test_touch_kinds_unknown_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_ENGAGEMENT_TOUCH_KINDS", "like,poke")

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert error_fields(info.value) == ["engagement_touch_kinds"]
    assert "'poke'" in messages(info.value)
    assert "allowed" in messages(info.value)


def test_touch_kinds_view_rejected(clean_env: pytest.MonkeyPatch) -> None:
    # Views always use the view lookback, so they cannot be made engagements.
    clean_env.setenv("ROITRACK_ENGAGEMENT_TOUCH_KINDS", "view")

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert "'view'" in messages(info.value)


# --- ROI windows ---------------------------------------------------------


def test_windows_comma_list_sorted(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_ROI_WINDOWS_S", "86400, 900,3600")

    assert load_settings().roi_windows_s == (900, 3600, 86400)


def test_windows_duplicates_removed(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_ROI_WINDOWS_S", "3600,3600,60")

    assert load_settings().roi_windows_s == (60, 3600)


def test_windows_keyword_list_accepted() -> None:
    assert load_settings(roi_windows_s=(7200, 3600)).roi_windows_s == (3600, 7200)


@pytest.mark.parametrize("window", ["90", "3601", "30"])
def test_windows_not_whole_minutes_rejected(clean_env: pytest.MonkeyPatch, window: str) -> None:
    clean_env.setenv("ROITRACK_ROI_WINDOWS_S", f"3600,{window}")

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert error_fields(info.value) == ["roi_windows_s"]
    assert f"ROI window {window} s" in messages(info.value)
    assert "whole number of minutes" in messages(info.value)


def test_windows_not_a_number_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_ROI_WINDOWS_S", "3600,1h")

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert error_fields(info.value) == ["roi_windows_s"]
    assert "'1h'" in messages(info.value)


def test_windows_empty_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_ROI_WINDOWS_S", "")

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert "at least one ROI window is required" in messages(info.value)


# --- Redis URL -----------------------------------------------------------


def test_redis_url_fallback(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "redis://fallback.example:6380/2")

    assert load_settings().redis_url == "redis://fallback.example:6380/2"


def test_redis_url_prefixed_wins(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("REDIS_URL", "redis://fallback.example:6380/2")
    clean_env.setenv("ROITRACK_REDIS_URL", "redis://primary.example:6379/0")

    assert load_settings().redis_url == "redis://primary.example:6379/0"


def test_redis_url_prefixed_alone(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_REDIS_URL", "rediss://primary.example:6379/1")

    assert load_settings().redis_url == "rediss://primary.example:6379/1"


def test_redis_url_keyword_accepted() -> None:
    assert load_settings(redis_url="redis://keyword.example:1/0").redis_url == "redis://keyword.example:1/0"


# --- cross-field checks --------------------------------------------------


def test_position_shares_above_one_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_POSITION_FIRST_SHARE", "0.6")
    clean_env.setenv("ROITRACK_POSITION_LAST_SHARE", "0.45")

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert "must be at most 1" in messages(info.value)
    assert "0.6 + 0.45" in messages(info.value)


def test_position_shares_exactly_one_accepted() -> None:
    settings = load_settings(position_first_share=Decimal("0.5"), position_last_share=Decimal("0.5"))

    assert settings.position_first_share + settings.position_last_share == 1


def test_position_share_above_one_alone_rejected(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_POSITION_LAST_SHARE", "1.2")

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert error_fields(info.value) == ["position_last_share"]


@pytest.mark.parametrize(("heartbeat", "session"), [("10", "10"), ("12", "10")])
def test_heartbeat_not_below_session_rejected(clean_env: pytest.MonkeyPatch, heartbeat: str, session: str) -> None:
    clean_env.setenv("ROITRACK_CONSUMER_HEARTBEAT_S", heartbeat)
    clean_env.setenv("ROITRACK_CONSUMER_SESSION_TIMEOUT_S", session)

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert "must be lower than consumer_session_timeout_s" in messages(info.value)


def test_heartbeat_error_names_values(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_CONSUMER_HEARTBEAT_S", "12.5")
    clean_env.setenv("ROITRACK_CONSUMER_SESSION_TIMEOUT_S", "10.25")

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert "12.5" in messages(info.value)
    assert "10.25" in messages(info.value)


def test_heartbeat_below_session_accepted() -> None:
    settings = load_settings(consumer_heartbeat_s=1.0, consumer_session_timeout_s=6.0)

    assert settings.consumer_heartbeat_s < settings.consumer_session_timeout_s


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("ROITRACK_LOOKBACK_CLICK_S", "0", "lookback_click_s"),
        ("ROITRACK_HALF_LIFE_S", "-5", "half_life_s"),
        ("ROITRACK_REPORTING_CURRENCY", "eur", "reporting_currency"),
        ("ROITRACK_WEB_PORT", "70000", "web_port"),
        ("ROITRACK_PERSON_PARTITIONS", "many", "person_partitions"),
    ],
)
def test_invalid_scalar_rejected(clean_env: pytest.MonkeyPatch, name: str, value: str, field: str) -> None:
    clean_env.setenv(name, value)

    with pytest.raises(ValidationError) as info:
        load_settings()

    assert error_fields(info.value) == [field]


# --- require_kafka -------------------------------------------------------


def test_require_kafka_empty_exits() -> None:
    with pytest.raises(SystemExit) as info:
        load_settings().require_kafka()

    message = str(info.value)
    assert "ROITRACK_KAFKA_BOOTSTRAP is empty" in message
    assert "roitrack demo" in message


def test_require_kafka_returns_bootstrap(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_KAFKA_BOOTSTRAP", "127.0.0.1:9092,127.0.0.1:9093")

    assert load_settings().require_kafka() == "127.0.0.1:9092,127.0.0.1:9093"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"app_id": ""}, "not a valid Kafka topic or group name"),
        ({"topic_touchpoints": "touch points"}, "not a valid Kafka topic or group name"),
        ({"redis_namespace": "a:b"}, "not a valid namespace"),
        ({"kafka_bootstrap": "127.0.0.1:99999"}, "port from 1 to 65535"),
        ({"kafka_bootstrap": "localhost"}, "not host:port"),
        ({"topic_spend": "campaigns"}, "repeated"),
        ({"conversion_settle_s": float("inf")}, "less than or equal"),
        ({"lookback_click_s": 10**20}, "less than or equal"),
        ({"roi_update_interval_s": 1e308}, "less than or equal"),
    ],
)
def test_out_of_range_settings_rejected(
    clean_env: pytest.MonkeyPatch, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        load_settings(**overrides)

    assert message in str(info.value)
