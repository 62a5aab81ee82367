"""deploy/docker-compose.yml and deploy/Dockerfile, checked without Docker.

The compose file is parsed with PyYAML. Every ROITRACK_* variable it sets must be
a real Settings field with a valid value, and the roitrack services must be
configured through those variables only.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import AliasChoices

from roitrack.cli import build_parser
from roitrack.settings import ENV_PREFIX, Settings, load_settings

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse deploy/docker-compose.yml")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
COMPOSE_PATH = DEPLOY_DIR / "docker-compose.yml"
DOCKERFILE_PATH = DEPLOY_DIR / "Dockerfile"
ROITRACK_SERVICES = ("topics", "worker")


def settings_env_names() -> set[str]:
    """Every environment variable that Settings reads, aliases included."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        else:
            names.add(f"{ENV_PREFIX}{name.upper()}")
    return names


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """Return a service's environment as a mapping, from either compose form."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) for item in environment)
        return {key: value for key, value in pairs}
    return dict(environment)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    with COMPOSE_PATH.open(encoding="utf-8") as handle:
        document: dict[str, Any] = yaml.safe_load(handle)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_compose_has_expected_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"kafka", "redis", "topics", "worker", "collector", "alerts"}


def test_compose_roitrack_variables_are_settings(services: dict[str, dict[str, Any]]) -> None:
    known = settings_env_names()
    for service_name, service in services.items():
        for variable in environment_of(service):
            if variable.startswith(ENV_PREFIX):
                assert variable in known, f"{service_name} sets {variable}, which is not a Settings field"


@pytest.mark.parametrize("service_name", ROITRACK_SERVICES)
def test_compose_roitrack_services_use_only_settings(
    services: dict[str, dict[str, Any]], service_name: str
) -> None:
    environment = environment_of(services[service_name])

    assert environment, f"{service_name} sets no environment"
    others = sorted(variable for variable in environment if not variable.startswith(ENV_PREFIX))
    assert others == [], f"{service_name} sets variables outside {ENV_PREFIX}*: {others}"


@pytest.mark.parametrize("service_name", ROITRACK_SERVICES)
def test_compose_environment_values_load(
    services: dict[str, dict[str, Any]], service_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = environment_of(services[service_name])
    for variable in settings_env_names():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        # Unquoted YAML numbers and booleans would reach the container in another spelling.
        assert isinstance(value, str), f"{service_name}: quote the value of {variable} ({value!r})"
        monkeypatch.setenv(variable, value)

    settings = load_settings()

    assert settings.kafka_bootstrap, f"{service_name} must set ROITRACK_KAFKA_BOOTSTRAP"


def test_compose_topics_and_workers_agree(services: dict[str, dict[str, Any]]) -> None:
    # Different topic names or partition counts would make the workers read other topics.
    assert environment_of(services["topics"]) == environment_of(services["worker"])


@pytest.mark.parametrize(("service_name", "expected"), [
    ("topics", ["topics", "create"]),
    ("worker", ["worker"]),
    ("alerts", ["alerts", "--rules", "/etc/roitrack/alerts.toml"]),
])
def test_compose_commands_parse(
    services: dict[str, dict[str, Any]], service_name: str, expected: list[str]
) -> None:
    command = services[service_name]["command"]

    assert command == expected
    args = build_parser().parse_args(command)
    assert args.command == expected[0]


def test_compose_worker_waits_for_topics(services: dict[str, dict[str, Any]]) -> None:
    depends_on = services["worker"]["depends_on"]

    assert depends_on["topics"]["condition"] == "service_completed_successfully"
    assert depends_on["redis"]["condition"] == "service_healthy"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_worker_replicas(services: dict[str, dict[str, Any]]) -> None:
    replicas = services["worker"]["deploy"]["replicas"]
    partitions = int(environment_of(services["worker"])["ROITRACK_PERSON_PARTITIONS"])

    assert replicas >= 2
    assert replicas <= partitions, "workers beyond the person partition count would sit idle"


def test_compose_kafka_kraft_single_node(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    environment = environment_of(kafka)

    assert kafka["image"].startswith("apache/kafka:")
    assert set(environment["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert environment["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{environment['KAFKA_NODE_ID']}@")
    assert not any("ZOOKEEPER" in variable for variable in environment)
    assert environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_compose_bootstrap_is_advertised(services: dict[str, dict[str, Any]]) -> None:
    advertised = environment_of(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    addresses = {re.sub(r"^[A-Z_]+://", "", listener) for listener in advertised.split(",")}
    bootstrap = environment_of(services["worker"])["ROITRACK_KAFKA_BOOTSTRAP"]

    for server in bootstrap.split(","):
        assert server in addresses, f"{server} is not among the advertised listeners {sorted(addresses)}"


def test_compose_redis_uses_aof(services: dict[str, dict[str, Any]]) -> None:
    command = services["redis"]["command"]
    options = dict(zip(command[1::2], command[2::2]))

    assert command[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"


def test_compose_redis_url_names_redis_service(services: dict[str, dict[str, Any]]) -> None:
    url = environment_of(services["worker"])["ROITRACK_REDIS_URL"]

    assert url.startswith("redis://redis:")


def test_dockerfile_installs_every_package() -> None:
    text = DOCKERFILE_PATH.read_text(encoding="utf-8")
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    copied = " ".join(line for line in instructions if line.startswith("COPY "))

    with (REPO_ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)
    packages = [pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]]

    assert instructions[0] == "FROM python:3.11-slim"
    assert any("pip install ." in line for line in instructions)
    for path in ("pyproject.toml", project["project"]["readme"], *packages):
        assert f" {path}" in copied, f"deploy/Dockerfile does not copy {path}"
    assert 'ENTRYPOINT ["roitrack"]' in instructions


def test_compose_alerts_rules_load(services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    from roitrack.alerts import load_rules

    service = services["alerts"]
    mount = next(volume for volume in service["volumes"] if volume.endswith(":/etc/roitrack/alerts.toml:ro"))
    rules_path = DEPLOY_DIR / mount.split(":")[0]
    for variable in settings_env_names():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment_of(service).items():
        # Compose replaces ${NAME:-default} with the default when NAME is unset.
        monkeypatch.setenv(variable, re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value))

    rule_set = load_rules(rules_path, load_settings())

    assert len(rule_set.rules) == 4
    assert rule_set.webhooks == {}
