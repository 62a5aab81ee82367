"""Alert rules: their model, and loading them from a TOML (or YAML) rules file.

docs/alerts.md describes the file format. ``load_rules`` checks every rule
against the settings (windows, cool-down default) and resolves the webhook
URLs, so a rules file that loads without error can run.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from roitrack.roi import window_label
from roitrack.settings import Settings, webhook_url_problem
from schemas.outputs import DEFAULT_MODEL, AlertMetric, AlertRuleKind, AttributionModel, check_amount_range

_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
_ENV_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: The clock of a rule. ``emitted_at`` is the ROI agent's wall clock when it published
#: the update; ``window_end`` is the event time at which the update's window ends.
RuleClock = Literal["emitted_at", "window_end"]
DropMetric = Literal["roas", "roi", "revenue", "conversions"]


def _to_decimal(value: object) -> object:
    """Accept a decimal string, an integer or a float (from TOML or YAML) as a Decimal."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, float):
        # str() gives the shortest text that reads back as the same float: 0.1, not 0.1000000000000000055.
        return Decimal(str(value))
    if isinstance(value, (int, str)):
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"must be a number such as 0.5 or \"0.5\", got {value!r}") from None
        if not number.is_finite():
            raise ValueError(f"must be a finite number, got {value!r}")
        return number
    return value


Number = Annotated[Decimal, BeforeValidator(_to_decimal), AfterValidator(check_amount_range)]


class _RuleBase(BaseModel):
    """Fields that every rule has."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=_NAME_PATTERN, description="unique name of the rule; alert ids and state derive from it")
    window: str = Field(min_length=1, description="RoiUpdate window: '1h', '24h', '7d' style label, or 'lifetime'")
    model: AttributionModel = DEFAULT_MODEL
    campaigns: tuple[str, ...] = Field((), description="campaign ids the rule watches; empty watches every campaign")
    cooldown_s: int | None = Field(
        None, ge=0, le=400 * 86400, description="overrides ROITRACK_ALERTS_COOLDOWN_S for this rule"
    )
    clock: RuleClock = "emitted_at"
    webhooks: tuple[str, ...] = Field((), description="names of webhooks from the file's [[webhooks]] list")

    @model_validator(mode="after")
    def _check_clock(self) -> "_RuleBase":
        if self.clock == "window_end" and self.window == "lifetime":
            raise ValueError(
                "clock = \"window_end\" needs a rolling window, because lifetime updates have no "
                "window end; use clock = \"emitted_at\" or a window such as \"24h\""
            )
        return self

    def watches(self, campaign_id: str) -> bool:
        """Return whether the rule applies to this campaign."""
        return not self.campaigns or campaign_id in self.campaigns

    @property
    def effective_cooldown_s(self) -> int:
        """The cool-down in seconds; ``load_rules`` fills ``cooldown_s`` from the settings."""
        return self.cooldown_s or 0


class RoiBelowRule(_RuleBase):
    """Breached while the window's ROI under the model is below ``threshold``."""

    kind: Literal["roi_below"]
    threshold: Number


class CpaAboveRule(_RuleBase):
    """Breached while the window's CPA under the model is above ``threshold`` (in the reporting currency)."""

    kind: Literal["cpa_above"]
    threshold: Annotated[Number, Field(ge=0)]


class SpendWithoutConversionsRule(_RuleBase):
    """Breached once the window has had spend and no conversions for ``for_s`` seconds on the rule's clock."""

    kind: Literal["spend_without_conversions"]
    for_s: int = Field(ge=0, le=400 * 86400)


class SuddenDropRule(_RuleBase):
    """Breached while ``metric`` is more than ``drop_pct`` percent below the mean of its recent values."""

    kind: Literal["sudden_drop"]
    metric: DropMetric
    drop_pct: Annotated[Number, Field(gt=0, le=100)]
    baseline_updates: int = Field(6, ge=1, le=1000, description="how many recent values form the baseline")


Rule = Annotated[
    Union[RoiBelowRule, CpaAboveRule, SpendWithoutConversionsRule, SuddenDropRule],
    Field(discriminator="kind"),
]
_RULE_ADAPTER: TypeAdapter[Rule] = TypeAdapter(Rule)
_RULE_KINDS: tuple[str, ...] = get_args(AlertRuleKind)


def rule_metric(rule: Rule) -> AlertMetric:
    """Name the metric that a rule compares with its threshold."""
    if isinstance(rule, RoiBelowRule):
        return "roi"
    if isinstance(rule, CpaAboveRule):
        return "cpa"
    if isinstance(rule, SpendWithoutConversionsRule):
        return "seconds_without_conversions"
    return rule.metric


class WebhookEntry(BaseModel):
    """A named webhook in a rules file. The URL is given directly, or read from an environment variable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    url: str | None = None
    url_env: str | None = None

    @model_validator(mode="after")
    def _check_one_source(self) -> "WebhookEntry":
        if (self.url is None) == (self.url_env is None):
            raise ValueError("set exactly one of url and url_env")
        if self.url_env is not None and not _ENV_PATTERN.match(self.url_env):
            raise ValueError(f"url_env must be an environment variable name, got {self.url_env!r}")
        return self


class RulesFile(BaseModel):
    """The top level of a rules file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[dict[str, Any]] = Field(min_length=1)
    webhooks: list[WebhookEntry] = []


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook target. ``name`` appears in logs; ``url`` never does, because it may contain a token."""

    name: str
    url: str

    @property
    def host(self) -> str:
        """Host and port of the URL, without user name, password, path or query."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules of one rules file, and every webhook target by name."""

    rules: tuple[Rule, ...]
    webhooks: dict[str, Webhook]
    #: Webhooks that receive every alert: those of ROITRACK_ALERTS_WEBHOOK_URLS.
    global_webhooks: tuple[str, ...]

    def webhooks_for(self, rule: Rule) -> tuple[str, ...]:
        """Return the names of the webhooks that receive the rule's alerts, each once."""
        return tuple(dict.fromkeys((*self.global_webhooks, *rule.webhooks)))

    def rule(self, rule_id: str) -> Rule | None:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None


class RulesError(ValueError):
    """The rules file is missing or invalid. The message names the file, the rule and the field."""


def _read_document(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RulesError(f"rules file {path} cannot be read: {exc.strerror}. Check the path.") from None
    if path.suffix.lower() in {".yaml", ".yml"}:
        try:
            import yaml
        except ImportError:
            raise RulesError(
                f"rules file {path} is YAML, but PyYAML is not installed. Install it with "
                "`pip install pyyaml`, or write the rules as TOML."
            ) from None
        try:
            return yaml.safe_load(data)
        except yaml.YAMLError as exc:
            raise RulesError(f"rules file {path} is not valid YAML: {exc}") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise RulesError(f"rules file {path} is not valid TOML: {exc}") from None


def _describe(exc: ValidationError, whole: str) -> str:
    """List the field errors; ``whole`` names the location of an error about the whole object."""
    problems = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or whole
        problems.append(f"{location}: {error['msg']}")
    return "; ".join(problems)


def _webhook_url(path: Path, entry: WebhookEntry) -> str:
    # Messages name the webhook and the variable, never the URL, which may contain a token.
    if entry.url_env is not None:
        url = os.environ.get(entry.url_env, "").strip()
        if not url:
            raise RulesError(
                f"rules file {path}: webhook {entry.name!r} reads its URL from {entry.url_env}, "
                "which is unset or empty. Set it, or give the URL in the file."
            )
    else:
        url = str(entry.url)
    problem = webhook_url_problem(url)
    if problem is not None:
        source = f" (from {entry.url_env})" if entry.url_env is not None else ""
        raise RulesError(f"rules file {path}: the URL of webhook {entry.name!r}{source} {problem}. Fix it.")
    return url


def load_rules(path: Path, settings: Settings) -> RuleSet:
    """Load and check a rules file (TOML, or YAML for a .yaml or .yml name).

    Fills each rule's ``cooldown_s`` from ``ROITRACK_ALERTS_COOLDOWN_S`` when the
    rule leaves it out. Raises ``RulesError`` naming the rule and field when the
    file is invalid, a rule id repeats, a window is not one of
    ``ROITRACK_ROI_WINDOWS_S`` or lifetime, or a rule names an unknown webhook.
    """
    document = _read_document(path)
    try:
        parsed = RulesFile.model_validate(document)
    except ValidationError as exc:
        raise RulesError(f"rules file {path} is invalid: {_describe(exc, '(top level)')}") from None

    windows = [window_label(window_s) for window_s in settings.roi_windows_s] + ["lifetime"]
    rules: list[Rule] = []
    for index, raw in enumerate(parsed.rules):
        name = f"rules[{index}]" + (f" (id {raw['id']!r})" if isinstance(raw.get("id"), str) else "")
        if "kind" not in raw:
            # Without this check, pydantic reports only that it cannot extract the discriminator.
            raise RulesError(
                f"rules file {path}: {name} is invalid: kind: missing; set it to one of {', '.join(_RULE_KINDS)}"
            )
        try:
            rule = _RULE_ADAPTER.validate_python(raw)
        except ValidationError as exc:
            raise RulesError(f"rules file {path}: {name} is invalid: {_describe(exc, '(rule)')}") from None
        if rule.window not in windows:
            raise RulesError(
                f"rules file {path}: {name} has window {rule.window!r}, which the ROI agent does not "
                f"publish. Use one of {', '.join(windows)} (from ROITRACK_ROI_WINDOWS_S)."
            )
        if any(other.id == rule.id for other in rules):
            raise RulesError(f"rules file {path}: rule id {rule.id!r} is used twice. Give each rule its own id.")
        if rule.cooldown_s is None:
            rule = rule.model_copy(update={"cooldown_s": settings.alerts_cooldown_s})
        rules.append(rule)

    webhooks: dict[str, Webhook] = {}
    global_names = []
    for position, url in enumerate(settings.alerts_webhook_urls, start=1):
        name = f"settings-{position}"
        webhooks[name] = Webhook(name, url)
        global_names.append(name)
    for entry in parsed.webhooks:
        if entry.name in webhooks:
            raise RulesError(f"rules file {path}: webhook name {entry.name!r} is used twice. Rename one.")
        webhooks[entry.name] = Webhook(entry.name, _webhook_url(path, entry))
    for rule in rules:
        unknown = [name for name in rule.webhooks if name not in webhooks]
        if unknown:
            raise RulesError(
                f"rules file {path}: rule {rule.id!r} names unknown webhook(s) {', '.join(unknown)}. "
                "Define them in [[webhooks]] or remove them from the rule."
            )
    return RuleSet(rules=tuple(rules), webhooks=webhooks, global_webhooks=tuple(global_names))
