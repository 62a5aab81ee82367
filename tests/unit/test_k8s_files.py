"""deploy/k8s, checked without a cluster.

Every YAML file there is parsed with PyYAML. The ROITRACK_* variables of the
ConfigMap and the Secret must be Settings fields that load together, the KEDA
ScaledObject must agree with the ConfigMap, and every container must run a
real `roitrack` subcommand.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import AliasChoices

from roitrack.cli import build_parser
from roitrack.settings import ENV_PREFIX, Settings, load_settings

yaml = pytest.importorskip("yaml", reason="PyYAML is needed to parse deploy/k8s")

K8S_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
EXPECTED_KINDS = Counter({
    "ConfigMap": 2, "Secret": 1, "Job": 1, "Deployment": 3, "Service": 1,
    "ScaledObject": 1, "TriggerAuthentication": 1, "PodDisruptionBudget": 2,
})
#: Subcommand of each workload, as build_parser() parses its args.
EXPECTED_COMMANDS = {
    ("Job", "roitrack-topics"): ["topics", "create"],
    ("Deployment", "roitrack-worker"): ["worker"],
    ("Deployment", "roitrack-collector"): ["collector"],
    ("Deployment", "roitrack-alerts"): ["alerts", "--rules", "/etc/roitrack/alerts.toml"],
}
#: KEDA's name of each SASL mechanism roitrack accepts.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
PLACEHOLDER = "REPLACE_WITH_"


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


def secret_env_names() -> set[str]:
    """Variables of the settings that are secret (``repr=False``)."""
    return {f"{ENV_PREFIX}{name.upper()}" for name, field in Settings.model_fields.items() if field.repr is False}


@pytest.fixture(scope="module")
def documents() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        with path.open(encoding="utf-8") as handle:
            for document in yaml.safe_load_all(handle):
                if document is not None:
                    document["__file__"] = path.name
                    found.append(document)
    return found


def one(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [doc for doc in documents if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def workloads(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] in {"Job", "Deployment"}]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return found


@pytest.fixture(scope="module")
def config_map(documents: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = one(documents, "ConfigMap", "roitrack-config")["data"]
    return data


@pytest.fixture(scope="module")
def secret(documents: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = one(documents, "Secret")["stringData"]
    return data


@pytest.fixture
def settings(config_map: dict[str, Any], secret: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The Settings a roitrack pod loads from the ConfigMap and the Secret."""
    for variable in settings_env_names():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in {**config_map, **secret}.items():
        monkeypatch.setenv(variable, value)
    return load_settings()


# --- every file ----------------------------------------------------------------


def test_k8s_files_parse(documents: list[dict[str, Any]]) -> None:
    kinds = Counter(doc["kind"] for doc in documents)

    assert kinds == EXPECTED_KINDS


def test_k8s_documents_have_no_namespace(documents: list[dict[str, Any]]) -> None:
    for doc in documents:
        assert doc.get("apiVersion"), f"{doc['__file__']}: {doc['kind']} has no apiVersion"
        assert doc["metadata"].get("name"), f"{doc['__file__']}: {doc['kind']} has no name"
        assert "namespace" not in doc["metadata"], f"{doc['__file__']}: set the namespace with kubectl -n, not in the file"


# --- ConfigMap and Secret -----------------------------------------------------------


def test_k8s_variables_are_settings(config_map: dict[str, Any], secret: dict[str, Any], documents: list[dict[str, Any]]) -> None:
    known = settings_env_names()
    variables = [*config_map, *secret]
    for workload in workloads(documents):
        for container in containers(workload):
            variables.extend(item["name"] for item in container.get("env", []))

    for variable in variables:
        assert variable.startswith(ENV_PREFIX), f"{variable} is not a roitrack setting"
        assert variable in known, f"{variable} is not a Settings field"


def test_k8s_values_are_strings(config_map: dict[str, Any], secret: dict[str, Any]) -> None:
    for variable, value in {**config_map, **secret}.items():
        assert isinstance(value, str), f"quote the value of {variable} ({value!r})"


def test_k8s_config_and_secret_disjoint(config_map: dict[str, Any], secret: dict[str, Any]) -> None:
    assert sorted(set(config_map) & set(secret)) == []


def test_k8s_secrets_only_in_secret(config_map: dict[str, Any], secret: dict[str, Any]) -> None:
    secrets = secret_env_names()

    assert sorted(secrets & set(config_map)) == []
    for variable in ("ROITRACK_KAFKA_SASL_PASSWORD", "ROITRACK_REDIS_URL", "ROITRACK_PII_SALT", "ROITRACK_COLLECTOR_TOKENS"):
        assert variable in secrets, f"{variable} is not a secret setting (repr=False)"
        assert PLACEHOLDER in secret[variable], f"{variable} in the Secret template is not a placeholder"


def test_k8s_redis_url_password_placeholder(secret: dict[str, Any]) -> None:
    url = urlsplit(secret["ROITRACK_REDIS_URL"])

    assert url.scheme in {"redis", "rediss"}
    assert url.password is not None
    assert url.password.startswith(PLACEHOLDER)


def test_k8s_settings_load(settings: Settings) -> None:
    assert settings.kafka_bootstrap
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.redis_cluster
    assert settings.collector_bind == "0.0.0.0", "the kubelet probes the collector on the pod address"
    assert settings.person_partitions >= settings.campaign_partitions
    assert settings.replication_factor >= 3


# --- workloads ---------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), sorted(EXPECTED_COMMANDS))
def test_k8s_commands_parse(documents: list[dict[str, Any]], kind: str, name: str) -> None:
    workload = one(documents, kind, name)
    expected = EXPECTED_COMMANDS[(kind, name)]
    (container,) = containers(workload)

    assert container["command"] == ["roitrack"]
    assert container["args"] == expected
    args = build_parser().parse_args(container["args"])
    assert args.command == expected[0]


def test_k8s_workloads_read_config_and_secret(documents: list[dict[str, Any]]) -> None:
    config_name = one(documents, "ConfigMap", "roitrack-config")["metadata"]["name"]
    secret_name = one(documents, "Secret")["metadata"]["name"]
    for workload in workloads(documents):
        for container in containers(workload):
            sources = container["envFrom"]
            assert {"configMapRef": {"name": config_name}} in sources, workload["metadata"]["name"]
            assert {"secretRef": {"name": secret_name}} in sources, workload["metadata"]["name"]


def test_k8s_one_image(documents: list[dict[str, Any]]) -> None:
    images = {container["image"] for workload in workloads(documents) for container in containers(workload)}

    assert len(images) == 1, images


def test_k8s_containers_have_resources(documents: list[dict[str, Any]]) -> None:
    for workload in workloads(documents):
        for container in containers(workload):
            resources = container["resources"]
            assert resources["requests"]["cpu"], workload["metadata"]["name"]
            assert resources["requests"]["memory"], workload["metadata"]["name"]
            assert resources["limits"]["memory"], workload["metadata"]["name"]


def test_k8s_deployment_selectors_match(documents: list[dict[str, Any]]) -> None:
    for deployment in (doc for doc in documents if doc["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        for key, value in deployment["spec"]["selector"]["matchLabels"].items():
            assert labels.get(key) == value, deployment["metadata"]["name"]


def test_k8s_worker_grace_period(documents: list[dict[str, Any]], settings: Settings) -> None:
    grace_s = one(documents, "Deployment", "roitrack-worker")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    # Faust needs the time to finish a batch and commit offsets on SIGTERM.
    assert grace_s >= 30
    assert grace_s > settings.consumer_session_timeout_s


def test_k8s_collector_port_and_probes(documents: list[dict[str, Any]], settings: Settings) -> None:
    (container,) = containers(one(documents, "Deployment", "roitrack-collector"))
    (port,) = container["ports"]

    assert port["containerPort"] == settings.collector_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port["name"]}, probe


def test_k8s_collector_service(documents: list[dict[str, Any]], settings: Settings) -> None:
    service = one(documents, "Service", "roitrack-collector")
    pod_labels = one(documents, "Deployment", "roitrack-collector")["spec"]["template"]["metadata"]["labels"]
    (container,) = containers(one(documents, "Deployment", "roitrack-collector"))
    (service_port,) = service["spec"]["ports"]

    assert service["spec"]["type"] == "ClusterIP"
    assert all(pod_labels.get(key) == value for key, value in service["spec"]["selector"].items())
    assert service_port["port"] == settings.collector_port
    assert service_port["targetPort"] == container["ports"][0]["name"]


def test_k8s_disruption_budgets_select_pods(documents: list[dict[str, Any]]) -> None:
    deployments = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Deployment"}
    for budget in (doc for doc in documents if doc["kind"] == "PodDisruptionBudget"):
        selected = budget["spec"]["selector"]["matchLabels"]
        matching = [
            name for name, deployment in deployments.items()
            if all(deployment["spec"]["template"]["metadata"]["labels"].get(key) == value for key, value in selected.items())
        ]
        assert matching == [budget["metadata"]["name"]], f"{budget['metadata']['name']} selects {matching}"


# --- KEDA ----------------------------------------------------------------------


def test_keda_max_replicas_is_person_partitions(documents: list[dict[str, Any]], config_map: dict[str, Any]) -> None:
    spec = one(documents, "ScaledObject")["spec"]

    assert spec["maxReplicaCount"] == int(config_map["ROITRACK_PERSON_PARTITIONS"])
    assert spec["minReplicaCount"] == 1


def test_keda_targets_worker(documents: list[dict[str, Any]]) -> None:
    spec = one(documents, "ScaledObject")["spec"]

    assert spec["scaleTargetRef"]["name"] == one(documents, "Deployment", "roitrack-worker")["metadata"]["name"]


def test_keda_triggers_match_settings(documents: list[dict[str, Any]], settings: Settings) -> None:
    triggers = one(documents, "ScaledObject")["spec"]["triggers"]
    authentication = one(documents, "TriggerAuthentication")["metadata"]["name"]
    consumed = {
        settings.topic_touchpoints, settings.topic_conversions,
        settings.topic_credits, settings.topic_campaigns, settings.topic_spend,
    }

    assert triggers
    for trigger in triggers:
        metadata = trigger["metadata"]
        assert trigger["type"] == "kafka"
        assert metadata["bootstrapServers"] == settings.kafka_bootstrap
        assert metadata["consumerGroup"] == settings.app_id
        assert metadata["topic"] in consumed
        assert int(metadata["lagThreshold"]) > 0
        assert metadata["offsetResetPolicy"] == "earliest", "Faust starts a new group at the earliest offset"
        assert metadata["allowIdleConsumers"] == "false"
        assert metadata["sasl"] == KEDA_SASL[settings.kafka_sasl_mechanism]
        assert metadata["tls"] == ("enable" if settings.kafka_security_protocol.endswith("SSL") else "disable")
        assert trigger["authenticationRef"]["name"] == authentication
    assert {settings.topic_touchpoints, settings.topic_conversions} <= {trigger["metadata"]["topic"] for trigger in triggers}


def test_keda_credentials_from_secret(documents: list[dict[str, Any]], secret: dict[str, Any]) -> None:
    secret_name = one(documents, "Secret")["metadata"]["name"]
    references = {item["parameter"]: item for item in one(documents, "TriggerAuthentication")["spec"]["secretTargetRef"]}

    assert references["username"]["key"] == "ROITRACK_KAFKA_SASL_USERNAME"
    assert references["password"]["key"] == "ROITRACK_KAFKA_SASL_PASSWORD"
    for reference in references.values():
        assert reference["name"] == secret_name
        assert reference["key"] in secret


def test_k8s_alert_rules_load(documents: list[dict[str, Any]], settings: Settings, tmp_path: Path) -> None:
    from roitrack.alerts import load_rules

    deployment = one(documents, "Deployment", "roitrack-alerts")
    (container,) = containers(deployment)
    (mount,) = container["volumeMounts"]
    (volume,) = deployment["spec"]["template"]["spec"]["volumes"]
    rules = one(documents, "ConfigMap", volume["configMap"]["name"])["data"]
    rules_path = container["args"][container["args"].index("--rules") + 1]
    assert rules_path.startswith(mount["mountPath"] + "/")
    local_path = tmp_path / rules_path.rsplit("/", 1)[1]
    local_path.write_text(rules[local_path.name])

    rule_set = load_rules(local_path, settings)

    assert len(rule_set.rules) == 4
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
