"""Settings: one frozen object, loaded once at start-up from ``ROITRACK_*`` variables.

Every field below is documented in ``docs/settings.md`` and shown by
``roitrack settings``; ``tests/unit/test_settings_docs.py`` keeps the two in step.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "ROITRACK_"


class Settings(BaseSettings):
    """Runtime configuration of the worker, the replay and the demo."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", populate_by_name=True
    )

    # --- Connections -----------------------------------------------------
    kafka_bootstrap: str = Field(
        "",
        description=(
            "Kafka bootstrap servers, host:port[,host:port]. Empty means: `roitrack demo` "
            "starts an embedded broker; other commands reject an empty value."
        ),
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("ROITRACK_REDIS_URL", "REDIS_URL"),
        description=(
            "Redis URL (redis:// or rediss://). REDIS_URL is read when ROITRACK_REDIS_URL is "
            "unset. `roitrack demo` starts a local redis-server when nothing answers here."
        ),
    )
    redis_namespace: str = Field(
        "roitrack", description="Prefix of every Redis key, so several deployments can share a server."
    )

    # --- Topics ----------------------------------------------------------
    topic_touchpoints: str = Field("touchpoints", description="Input topic of clicks, social touchpoints and check-ins, keyed by person.")
    topic_conversions: str = Field("conversions", description="Input topic of purchases and coupon redemptions, keyed by person.")
    topic_campaigns: str = Field("campaigns", description="Input topic of campaign definitions, keyed by campaign id.")
    topic_spend: str = Field("spend", description="Input topic of campaign spend, keyed by campaign id.")
    topic_credits: str = Field("credits", description="Internal topic of per-campaign conversion credits, keyed by campaign id.")
    topic_attributions: str = Field("attributions", description="Output topic: one Attribution per conversion, keyed by person.")
    topic_roi_updates: str = Field("roi-updates", description="Output topic of rolling RoiUpdate records, keyed by campaign id.")
    topic_dead_letters: str = Field("dead-letters", description="Output topic of rejected messages with the reason, keyed like the source message.")
    person_partitions: int = Field(
        8, ge=1, description="Partitions of the person-keyed topics (touchpoints, conversions, attributions)."
    )
    campaign_partitions: int = Field(
        4, ge=1, description="Partitions of the campaign-keyed topics (campaigns, spend, credits, roi-updates)."
    )
    replication_factor: int = Field(1, ge=1, description="Replication factor used by `roitrack topics create`.")

    # --- Attribution -----------------------------------------------------
    lookback_click_s: int = Field(
        7 * 86400, ge=1, description="Lookback window of clicks, check-ins and engagements, in seconds."
    )
    lookback_view_s: int = Field(86400, ge=1, description="Lookback window of views, in seconds.")
    half_life_s: int = Field(
        7 * 86400, ge=1, description="Half-life of the time-decay model, in seconds."
    )
    position_first_share: Decimal = Field(
        Decimal("0.4"), ge=0, le=1, description="Position-based model: share of the first touch (0-1)."
    )
    position_last_share: Decimal = Field(
        Decimal("0.4"), ge=0, le=1, description="Position-based model: share of the last touch (0-1)."
    )
    engagement_touch_kinds: Annotated[frozenset[str], NoDecode] = Field(
        frozenset({"like", "share", "comment", "follow"}),
        description=(
            "Social touchpoint kinds that count as engaged touches with the click lookback, "
            "comma-separated. Views always count with the view lookback; other kinds are stored "
            "but not credited."
        ),
    )
    max_touchpoints_per_person: int = Field(
        256, ge=1, description="Touchpoints kept per person; older ones are trimmed first."
    )
    conversion_settle_s: float = Field(
        2.0,
        ge=0,
        description=(
            "Seconds a conversion waits before attribution, so touchpoints still in transit "
            "count. Measured in event time while the touchpoint partition has a backlog, "
            "in wall time once it is caught up."
        ),
    )
    reporting_currency: str = Field(
        "EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 currency of spend and of every reported amount."
    )

    # --- ROI -------------------------------------------------------------
    roi_windows_s: Annotated[tuple[int, ...], NoDecode] = Field(
        (3600, 86400, 7 * 86400),
        description=(
            "Rolling ROI windows in seconds, comma-separated; lifetime is always reported "
            "beside them. Each must be a whole number of minutes."
        ),
    )
    roi_update_interval_s: float = Field(
        0.5,
        gt=0,
        description="Minimum seconds between two RoiUpdate emissions for one campaign (the throttle).",
    )
    dedup_horizon_s: int = Field(
        7 * 86400, ge=60, description="How long credit ids are remembered to drop repeated credits, in seconds."
    )

    # --- Worker ----------------------------------------------------------
    app_id: str = Field("roitrack", description="Faust application id; also the Kafka consumer group id.")
    batch_max_events: int = Field(
        2000, ge=1, description="Maximum Kafka messages an agent takes per batch."
    )
    batch_within_s: float = Field(
        0.05, gt=0, description="Maximum seconds an agent waits to fill a batch."
    )
    consumer_session_timeout_s: float = Field(
        10.0, gt=0, description="Kafka consumer session timeout, in seconds."
    )
    consumer_heartbeat_s: float = Field(
        3.0, gt=0, description="Kafka consumer heartbeat interval, in seconds."
    )
    data_dir: str = Field(
        "",
        description=(
            "Directory for Faust's local files; roitrack keeps no state there. "
            "Empty means <system temp dir>/roitrack."
        ),
    )
    web_enabled: bool = Field(False, description="Start Faust's web server in the worker.")
    web_port: int = Field(6066, ge=1, le=65535, description="Port of Faust's web server.")
    dead_letter_payload_max_bytes: int = Field(
        4096, ge=64, description="Raw payload bytes kept in a dead letter; the rest is cut."
    )

    @field_validator("engagement_touch_kinds", mode="before")
    @classmethod
    def _split_kinds(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("roi_windows_s", mode="before")
    @classmethod
    def _split_windows(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(int(part) for part in value.split(",") if part.strip())
        return value

    @field_validator("roi_windows_s")
    @classmethod
    def _check_windows(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("at least one ROI window is required, for example 3600,86400")
        for window_s in value:
            if window_s < 60 or window_s % 60:
                raise ValueError(f"ROI window {window_s} s is not a whole number of minutes >= 60 s")
        return tuple(sorted(set(value)))

    @field_validator("engagement_touch_kinds")
    @classmethod
    def _check_kinds(cls, value: frozenset[str]) -> frozenset[str]:
        allowed = {"like", "share", "comment", "follow"}
        unknown = sorted(value - allowed)
        if unknown:
            raise ValueError(
                f"unknown touch kind(s) {unknown}; allowed: {sorted(allowed)}"
            )
        return value

    @model_validator(mode="after")
    def _check_position_shares(self) -> "Settings":
        if self.position_first_share + self.position_last_share > 1:
            raise ValueError(
                "position_first_share + position_last_share must be at most 1, got "
                f"{self.position_first_share} + {self.position_last_share}"
            )
        if self.consumer_heartbeat_s >= self.consumer_session_timeout_s:
            raise ValueError(
                "consumer_heartbeat_s must be lower than consumer_session_timeout_s"
            )
        return self

    @property
    def touchpoint_ttl_s(self) -> int:
        """Seconds a stored touchpoint lives: the longest lookback window."""
        return max(self.lookback_click_s, self.lookback_view_s)


    def require_kafka(self) -> str:
        """Return the bootstrap servers, or raise with the fix when none are set."""
        if not self.kafka_bootstrap:
            raise SystemExit(
                "ROITRACK_KAFKA_BOOTSTRAP is empty. Set it to your brokers (host:port), "
                "or run `roitrack demo`, which starts an embedded broker."
            )
        return self.kafka_bootstrap


def load_settings(**overrides: object) -> Settings:
    """Load settings from the environment, with keyword overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings accepts field names as kwargs
