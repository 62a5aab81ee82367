"""Loading alert rules files: the formats, the defaults and every rejection."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from roitrack.alerts.rules import (
    CpaAboveRule,
    RoiBelowRule,
    RulesError,
    SpendWithoutConversionsRule,
    SuddenDropRule,
    load_rules,
)
from roitrack.cli import _load as load_settings_or_exit
from roitrack.settings import Settings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings() -> Settings:
    return load_settings(alerts_cooldown_s=900)


def write(tmp_path: Path, text: str, name: str = "rules.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_kind_loads(tmp_path: Path, settings: Settings) -> None:
    path = write(tmp_path, """
[[rules]]
id = "roi"
kind = "roi_below"
window = "24h"
threshold = -0.5

[[rules]]
id = "cpa"
kind = "cpa_above"
window = "7d"
model = "linear"
threshold = "12.50"
cooldown_s = 60

[[rules]]
id = "spend"
kind = "spend_without_conversions"
window = "lifetime"
for_s = 3600

[[rules]]
id = "drop"
kind = "sudden_drop"
window = "1h"
metric = "roas"
drop_pct = 40
campaigns = ["a", "b"]
""")

    rules = load_rules(path, settings).rules

    assert [type(rule) for rule in rules] == [RoiBelowRule, CpaAboveRule, SpendWithoutConversionsRule, SuddenDropRule]
    roi, cpa, spend, drop = rules
    assert isinstance(roi, RoiBelowRule)
    assert roi.threshold == Decimal("-0.5")
    assert roi.model == "last_touch"
    assert roi.cooldown_s == 900
    assert isinstance(cpa, CpaAboveRule)
    assert cpa.threshold == Decimal("12.50")
    assert cpa.cooldown_s == 60
    assert isinstance(spend, SpendWithoutConversionsRule)
    assert spend.for_s == 3600
    assert spend.clock == "emitted_at"
    assert isinstance(drop, SuddenDropRule)
    assert drop.baseline_updates == 6
    assert drop.watches("a")
    assert not drop.watches("c")
    assert roi.watches("anything")


def test_example_file_loads(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("ROITRACK_ALERTS_WEBHOOK_MARKETING", "https://hooks.example.com/T0/secret")

    rule_set = load_rules(REPO_ROOT / "deploy" / "alerts.example.toml", settings)

    assert len(rule_set.rules) == 4
    assert rule_set.webhooks["marketing-chat"].url == "https://hooks.example.com/T0/secret"
    assert rule_set.webhooks["marketing-chat"].host == "hooks.example.com"


def test_yaml_file_loads(tmp_path: Path, settings: Settings) -> None:
    path = write(tmp_path, """
rules:
  - id: roi
    kind: roi_below
    window: lifetime
    threshold: 0
""", name="rules.yaml")

    rules = load_rules(path, settings).rules

    assert len(rules) == 1
    assert rules[0].window == "lifetime"


def test_settings_webhooks_receive_every_rule(tmp_path: Path) -> None:
    settings = load_settings(alerts_webhook_urls=("https://a.example/hook",))
    path = write(tmp_path, """
[[webhooks]]
name = "team"
url = "http://127.0.0.1:9/hook"

[[rules]]
id = "roi"
kind = "roi_below"
window = "lifetime"
threshold = 0
webhooks = ["team"]

[[rules]]
id = "cpa"
kind = "cpa_above"
window = "lifetime"
threshold = 5
""")

    rule_set = load_rules(path, settings)

    assert rule_set.webhooks_for(rule_set.rules[0]) == ("settings-1", "team")
    assert rule_set.webhooks_for(rule_set.rules[1]) == ("settings-1",)


RULE = '[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "1h"\nthreshold = 0\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "rules"),
        ('[[rules]]\nid = "x"\nkind = "roi_above"\nwindow = "1h"\nthreshold = 0\n', "roi_above"),
        ('[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "1h"\n', "threshold"),
        ('[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "1h"\nthreshold = "lots"\n', "lots"),
        ('[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "1h"\nthreshold = 0\ncolour = "red"\n', "colour"),
        ('[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "2h"\nthreshold = 0\n', "1h, 24h, 7d, lifetime"),
        ('[[rules]]\nid = "x y"\nkind = "roi_below"\nwindow = "1h"\nthreshold = 0\n', "id"),
        ('[[rules]]\nid = "x"\nkind = "cpa_above"\nwindow = "1h"\nthreshold = -1\n', "threshold"),
        ('[[rules]]\nid = "x"\nkind = "sudden_drop"\nwindow = "1h"\nmetric = "roas"\ndrop_pct = 0\n', "drop_pct"),
        ('[[rules]]\nid = "x"\nkind = "sudden_drop"\nwindow = "1h"\nmetric = "cpa"\ndrop_pct = 10\n', "metric"),
        ('[[rules]]\nid = "x"\nkind = "spend_without_conversions"\nwindow = "lifetime"\nfor_s = 60\n'
         'clock = "window_end"\n', "rolling window"),
        ('[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "1h"\nthreshold = 0\n'
         '[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "24h"\nthreshold = 0\n', "used twice"),
        ('[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "1h"\nthreshold = 0\nwebhooks = ["nope"]\n', "nope"),
        ('[[webhooks]]\nname = "w"\n[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "1h"\nthreshold = 0\n',
         "exactly one of url and url_env"),
        ("[[rules]\n", "not valid TOML"),
        # Missing kind, figures out of range, and webhook URLs that cannot be connected to.
        ('[[rules]]\nid = "x"\nwindow = "1h"\nthreshold = 0\n',
         "kind: missing; set it to one of roi_below, cpa_above, spend_without_conversions, sudden_drop"),
        ('[[rules]]\nid = "x"\nkind = "roi_below"\nwindow = "1h"\nthreshold = "1e999999"\n',
         "threshold: Value error, has more than 30 integer digits: '1E+999999'"),
        ('[[rules]]\nid = "x"\nkind = "cpa_above"\nwindow = "1h"\nthreshold = "1e-999999"\n',
         "threshold: Value error, has more than 100 fraction digits: '1E-999999'"),
        (f'[[webhooks]]\nname = "chat"\nurl = "http://localhost:abc/x"\n{RULE}',
         "webhook 'chat' has port 'abc'; a port must be a number from 1 to 65535"),
        (f'[[webhooks]]\nname = "chat"\nurl = "http://localhost:99999/x"\n{RULE}',
         "webhook 'chat' has port '99999'; a port must be a number from 1 to 65535"),
        (f'[[webhooks]]\nname = "chat"\nurl = "http://localhost:0/x"\n{RULE}',
         "webhook 'chat' has port '0'; a port must be a number from 1 to 65535"),
        (f'[[webhooks]]\nname = "chat"\nurl = "http://[::1/x"\n{RULE}',
         "the URL of webhook 'chat' is invalid: Invalid IPv6 URL"),
        (f'[[webhooks]]\nname = "chat"\nurl = "http://[zz]/x"\n{RULE}',
         "the URL of webhook 'chat' is invalid: 'zz' does not appear to be an IPv4 or IPv6 address"),
        (f'[[webhooks]]\nname = "chat"\nurl = "http://hooks.example/a b"\n{RULE}',
         "the URL of webhook 'chat' contains a space or a control character; percent-encode it"),
    ],
)
def test_invalid_file_rejected(tmp_path: Path, settings: Settings, text: str, expected: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(RulesError) as raised:
        load_rules(path, settings)

    assert expected in str(raised.value)
    assert str(path) in str(raised.value)


def test_error_names_rule_id(tmp_path: Path, settings: Settings) -> None:
    path = write(tmp_path, '[[rules]]\nid = "cheap"\nkind = "cpa_above"\nwindow = "1h"\n')

    with pytest.raises(RulesError, match=r"rules\[0\] \(id 'cheap'\)"):
        load_rules(path, settings)


def test_missing_file_rejected(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(RulesError, match="cannot be read"):
        load_rules(tmp_path / "absent.toml", settings)


def test_webhook_url_error_hides_url(tmp_path: Path, settings: Settings) -> None:
    path = write(tmp_path, """
[[webhooks]]
name = "chat"
url = "ftp://user:token-SECRET@example.com/x"

[[rules]]
id = "x"
kind = "roi_below"
window = "1h"
threshold = 0
webhooks = ["chat"]
""")

    with pytest.raises(RulesError) as raised:
        load_rules(path, settings)

    assert "chat" in str(raised.value)
    assert "SECRET" not in str(raised.value)


def test_webhook_url_env_unset_rejected(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROITRACK_TEST_HOOK_UNSET", raising=False)
    path = write(tmp_path, """
[[webhooks]]
name = "chat"
url_env = "ROITRACK_TEST_HOOK_UNSET"

[[rules]]
id = "x"
kind = "roi_below"
window = "1h"
threshold = 0
""")

    with pytest.raises(RulesError, match="ROITRACK_TEST_HOOK_UNSET"):
        load_rules(path, settings)


def test_settings_webhook_url_error_hides_url() -> None:
    with pytest.raises(ValueError) as raised:
        load_settings(alerts_webhook_urls=("mailto:token-SECRET@example.com",))

    assert "number 1" in str(raised.value)
    assert "SECRET" not in str(raised.value)


def test_settings_webhook_urls_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROITRACK_ALERTS_WEBHOOK_URLS", "https://a.example/1, http://b.example:8080/2")

    assert load_settings().alerts_webhook_urls == ("https://a.example/1", "http://b.example:8080/2")




def test_webhook_port_error_hides_url(tmp_path: Path, settings: Settings) -> None:
    path = write(tmp_path, f'[[webhooks]]\nname = "chat"\nurl = "https://user:token-SECRET@localhost:abc/x"\n{RULE}')

    with pytest.raises(RulesError) as raised:
        load_rules(path, settings)

    assert "'abc'" in str(raised.value)
    assert "SECRET" not in str(raised.value)


def test_webhook_url_env_port_rejected(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROITRACK_TEST_HOOK_BAD_PORT", "http://localhost:abc/x")
    path = write(tmp_path, f'[[webhooks]]\nname = "chat"\nurl_env = "ROITRACK_TEST_HOOK_BAD_PORT"\n{RULE}')

    with pytest.raises(RulesError) as raised:
        load_rules(path, settings)

    assert "ROITRACK_TEST_HOOK_BAD_PORT" in str(raised.value)
    assert "'abc'" in str(raised.value)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://localhost:abc/", "URL number 2 has port 'abc'; a port must be a number from 1 to 65535"),
        ("http://localhost:99999/", "URL number 2 has port '99999'; a port must be a number from 1 to 65535"),
        ("http://[::1/", "URL number 2 is invalid: Invalid IPv6 URL"),
    ],
    ids=["port-not-number", "port-too-high", "ipv6-unclosed"],
)
def test_settings_webhook_url_env_rejected(monkeypatch: pytest.MonkeyPatch, url: str, expected: str) -> None:
    monkeypatch.setenv("ROITRACK_ALERTS_WEBHOOK_URLS", f"https://a.example/1,{url}")

    with pytest.raises(SystemExit) as raised:
        load_settings_or_exit()

    message = str(raised.value)
    assert message.startswith("invalid settings: ROITRACK_ALERTS_WEBHOOK_URLS=(secret, not shown): ")
    assert expected in message
