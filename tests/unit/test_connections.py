"""Connection settings and the client options built from them (roitrack.connections).

Kafka TLS and SASL cannot be exercised against tansu, so these tests check
what each builder passes to kafka-python, aiokafka and Faust for every
security protocol, and the validation errors of the settings. Nothing here
opens a connection.
"""

from __future__ import annotations

import inspect
import os
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
import redis
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from pydantic import ValidationError
from redis._parsers import _AsyncHiredisParser, _HiredisParser
from redis.connection import HiredisRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from roitrack.cli import _load
from roitrack.connections import (
    aiokafka_config,
    faust_broker_credentials,
    kafka_python_config,
    kafka_ssl_context,
    redis_client,
    redis_options,
    sync_redis_client,
)
from roitrack.settings import Settings, load_settings
from streams.app import faust_config
from tests.tls_files import TlsFiles, make_tls_files, missing_openssl

PASSWORD = "pa55-w0rd-not-for-logs"
SASL = {"kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "roitrack", "kafka_sasl_password": PASSWORD}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Remove every ROITRACK_* variable and REDIS_URL, so only what a test sets is read."""
    for name in list(os.environ):
        if name.startswith("ROITRACK_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    reason = missing_openssl()
    if reason:
        pytest.skip(reason)
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def messages(error: ValidationError) -> str:
    return "\n".join(detail["msg"] for detail in error.errors())


def kafka(**overrides: object) -> Settings:
    return load_settings(kafka_bootstrap="127.0.0.1:9092", **overrides)


def client_files(tls: TlsFiles) -> dict[str, str]:
    return {
        "kafka_ssl_cafile": str(tls.ca_cert),
        "kafka_ssl_certfile": str(tls.client_cert),
        "kafka_ssl_keyfile": str(tls.client_key),
    }


# --- kafka-python ------------------------------------------------------------


def test_kafka_python_plaintext_is_default() -> None:
    assert kafka_python_config(kafka()) == {"security_protocol": "PLAINTEXT"}


def test_kafka_python_ssl_files(tls: TlsFiles) -> None:
    config = kafka_python_config(kafka(kafka_security_protocol="SSL", **client_files(tls)))

    assert config == {
        "security_protocol": "SSL",
        "ssl_cafile": str(tls.ca_cert),
        "ssl_certfile": str(tls.client_cert),
        "ssl_keyfile": str(tls.client_key),
    }


def test_kafka_python_ssl_without_files() -> None:
    # kafka-python then verifies the brokers against the system's CA store.
    assert kafka_python_config(kafka(kafka_security_protocol="SSL")) == {"security_protocol": "SSL"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kafka_python_sasl_plaintext(mechanism: str) -> None:
    settings = kafka(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="roitrack", kafka_sasl_password=PASSWORD,
    )

    assert kafka_python_config(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "roitrack",
        "sasl_plain_password": PASSWORD,
    }


def test_kafka_python_sasl_ssl(tls: TlsFiles) -> None:
    settings = kafka(kafka_security_protocol="SASL_SSL", kafka_ssl_cafile=str(tls.ca_cert), **SASL)

    assert kafka_python_config(settings) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "roitrack",
        "sasl_plain_password": PASSWORD,
        "ssl_cafile": str(tls.ca_cert),
    }


@pytest.mark.parametrize("client_class", [KafkaProducer, KafkaConsumer, KafkaAdminClient])
def test_kafka_python_options_exist(tls: TlsFiles, client_class: type) -> None:
    settings = kafka(kafka_security_protocol="SASL_SSL", **client_files(tls), **SASL)

    unknown = sorted(set(kafka_python_config(settings)) - set(client_class.DEFAULT_CONFIG))  # type: ignore[attr-defined]  # kafka-python's classes carry DEFAULT_CONFIG without type hints

    assert unknown == [], f"{client_class.__name__} has no option {unknown}"


# --- aiokafka ----------------------------------------------------------------


def test_aiokafka_plaintext_is_default() -> None:
    assert aiokafka_config(kafka()) == {"security_protocol": "PLAINTEXT"}


def test_aiokafka_ssl_context(tls: TlsFiles) -> None:
    config = aiokafka_config(kafka(kafka_security_protocol="SSL", **client_files(tls)))
    context = config["ssl_context"]

    assert set(config) == {"security_protocol", "ssl_context"}
    assert config["security_protocol"] == "SSL"
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    issuers = [dict(part[0] for part in cert["issuer"]) for cert in context.get_ca_certs()]
    assert {"commonName": "roitrack test ca"} in issuers


def test_aiokafka_ssl_without_files_uses_system_store() -> None:
    context = aiokafka_config(kafka(kafka_security_protocol="SSL"))["ssl_context"]

    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_aiokafka_sasl_plaintext(mechanism: str) -> None:
    settings = kafka(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="roitrack", kafka_sasl_password=PASSWORD,
    )

    assert aiokafka_config(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "roitrack",
        "sasl_plain_password": PASSWORD,
    }


def test_aiokafka_sasl_ssl(tls: TlsFiles) -> None:
    config = aiokafka_config(kafka(kafka_security_protocol="SASL_SSL", kafka_ssl_cafile=str(tls.ca_cert), **SASL))

    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["sasl_plain_username"] == "roitrack"
    assert config["sasl_plain_password"] == PASSWORD
    assert isinstance(config["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize("client_class", [AIOKafkaProducer, AIOKafkaConsumer])
def test_aiokafka_options_exist(tls: TlsFiles, client_class: type) -> None:
    settings = kafka(kafka_security_protocol="SASL_SSL", **client_files(tls), **SASL)
    parameters = inspect.signature(client_class.__init__).parameters

    unknown = sorted(set(aiokafka_config(settings)) - set(parameters))

    assert unknown == [], f"{client_class.__name__} has no parameter {unknown}"


def test_ssl_context_none_without_tls() -> None:
    assert kafka_ssl_context(kafka()) is None
    assert kafka_ssl_context(kafka(kafka_security_protocol="SASL_PLAINTEXT", **SASL)) is None


def test_ssl_context_rejects_key_of_other_certificate(tls: TlsFiles) -> None:
    settings = kafka(
        kafka_security_protocol="SSL", kafka_ssl_certfile=str(tls.client_cert), kafka_ssl_keyfile=str(tls.server_key),
    )

    with pytest.raises(ssl.SSLError):
        kafka_ssl_context(settings)


# --- Faust -------------------------------------------------------------------


def test_faust_credentials_none_for_plaintext() -> None:
    settings = kafka()

    assert faust_broker_credentials(settings) is None
    assert faust_config(settings)["broker_credentials"] is None


def test_faust_ssl_credentials(tls: TlsFiles) -> None:
    credentials = faust_broker_credentials(kafka(kafka_security_protocol="SSL", **client_files(tls)))

    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials.protocol.value == "SSL"
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_faust_sasl_plaintext_credentials(mechanism: str) -> None:
    settings = kafka(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="roitrack", kafka_sasl_password=PASSWORD,
    )

    credentials = faust_broker_credentials(settings)

    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_PLAINTEXT"
    assert credentials.mechanism.value == mechanism
    assert credentials.username == "roitrack"
    assert credentials.password == PASSWORD
    assert credentials.ssl_context is None
    assert PASSWORD not in repr(credentials)


def test_faust_sasl_ssl_credentials(tls: TlsFiles) -> None:
    credentials = faust_broker_credentials(
        kafka(kafka_security_protocol="SASL_SSL", kafka_ssl_cafile=str(tls.ca_cert), **SASL)
    )

    assert isinstance(credentials, faust.SASLCredentials)
    assert credentials.protocol.value == "SASL_SSL"
    assert isinstance(credentials.ssl_context, ssl.SSLContext)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"])
def test_faust_and_aiokafka_agree(tls: TlsFiles, protocol: str) -> None:
    """Faust's aiokafka driver turns the credentials into the options roitrack's collector uses."""
    overrides: dict[str, Any] = {"kafka_security_protocol": protocol}
    if protocol.startswith("SASL"):
        overrides.update(SASL)
    if protocol.endswith("SSL"):
        overrides["kafka_ssl_cafile"] = str(tls.ca_cert)
    settings = kafka(**overrides)

    from_faust = credentials_to_aiokafka_auth(faust_broker_credentials(settings))
    ours = aiokafka_config(settings)

    assert from_faust["security_protocol"] == ours["security_protocol"]
    for name in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert from_faust.get(name) == ours.get(name), name
    assert isinstance(from_faust.get("ssl_context"), ssl.SSLContext) == ("ssl_context" in ours)


# --- Kafka settings validation -------------------------------------------------


def test_protocol_lower_case_accepted() -> None:
    settings = kafka(kafka_security_protocol="sasl_ssl", kafka_sasl_mechanism="scram-sha-256",
                     kafka_sasl_username="u", kafka_sasl_password=PASSWORD)

    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-256"


@pytest.mark.parametrize(("field", "value"), [
    ("kafka_security_protocol", "TLS"),
    ("kafka_sasl_mechanism", "GSSAPI"),
    ("kafka_sasl_mechanism", "OAUTHBEARER"),
])
def test_unknown_choice_rejected(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as info:
        kafka(**{field: value})

    assert [error["loc"] for error in info.value.errors()] == [(field,)]


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("missing", ["kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"])
def test_sasl_needs_every_credential(protocol: str, missing: str) -> None:
    values = {**SASL, missing: ""}

    with pytest.raises(ValidationError) as info:
        kafka(kafka_security_protocol=protocol, **values)

    text = messages(info.value)
    assert f"ROITRACK_{missing.upper()}" in text
    assert f"ROITRACK_KAFKA_SECURITY_PROTOCOL={protocol}" in text
    assert PASSWORD not in text
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_sasl_settings_without_sasl_rejected(protocol: str) -> None:
    with pytest.raises(ValidationError) as info:
        kafka(kafka_security_protocol=protocol, **SASL)

    text = messages(info.value)
    assert "ROITRACK_KAFKA_SASL_PASSWORD" in text
    assert "does not use SASL" in text
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_ssl_files_without_tls_rejected(tls: TlsFiles, protocol: str) -> None:
    sasl = SASL if protocol == "SASL_PLAINTEXT" else {}

    with pytest.raises(ValidationError) as info:
        kafka(kafka_security_protocol=protocol, kafka_ssl_cafile=str(tls.ca_cert), **sasl)

    assert "ROITRACK_KAFKA_SSL_CAFILE is set" in messages(info.value)
    assert "does not use TLS" in messages(info.value)


def test_keyfile_needs_certfile(tls: TlsFiles) -> None:
    with pytest.raises(ValidationError) as info:
        kafka(kafka_security_protocol="SSL", kafka_ssl_keyfile=str(tls.client_key))

    assert "ROITRACK_KAFKA_SSL_KEYFILE is set without ROITRACK_KAFKA_SSL_CERTFILE" in messages(info.value)


@pytest.mark.parametrize("field", ["kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "redis_ssl_cafile"])
def test_missing_file_names_variable_and_path(tmp_path: Path, field: str) -> None:
    path = tmp_path / "absent.pem"

    with pytest.raises(ValidationError) as info:
        load_settings(**{field: str(path)})

    assert [error["loc"] for error in info.value.errors()] == [(field,)]
    assert f"ROITRACK_{field.upper()}={path}: file not found" in messages(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        kafka(kafka_security_protocol="SSL", kafka_ssl_cafile=str(tmp_path))

    assert f"ROITRACK_KAFKA_SSL_CAFILE={tmp_path}: file not found" in messages(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ca.pem"
    path.write_text("not read", encoding="utf-8")
    path.chmod(0)

    with pytest.raises(ValidationError) as info:
        kafka(kafka_security_protocol="SSL", kafka_ssl_cafile=str(path))

    assert f"ROITRACK_KAFKA_SSL_CAFILE={path}: the file is not readable" in messages(info.value)


def test_env_variables_read(clean_env: pytest.MonkeyPatch, tls: TlsFiles) -> None:
    clean_env.setenv("ROITRACK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("ROITRACK_KAFKA_SASL_MECHANISM", "PLAIN")
    clean_env.setenv("ROITRACK_KAFKA_SASL_USERNAME", "roitrack")
    clean_env.setenv("ROITRACK_KAFKA_SASL_PASSWORD", PASSWORD)
    clean_env.setenv("ROITRACK_KAFKA_SSL_CAFILE", str(tls.ca_cert))
    clean_env.setenv("ROITRACK_REDIS_URL", "rediss://default:secret@redis-0:6379/0")
    clean_env.setenv("ROITRACK_REDIS_CLUSTER", "true")
    clean_env.setenv("ROITRACK_REDIS_SSL_CAFILE", str(tls.ca_cert))

    settings = load_settings()

    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_sasl_password == PASSWORD
    assert settings.redis_cluster is True
    assert settings.redis_ssl_cafile == str(tls.ca_cert)


# --- secrets -----------------------------------------------------------------


def test_secrets_not_in_repr() -> None:
    settings = kafka(
        kafka_security_protocol="SASL_PLAINTEXT", **SASL,
        redis_url="redis://default:redis-secret@redis:6379/0", pii_salt="salt-secret",
    )

    text = repr(settings)

    for secret in (PASSWORD, "redis-secret", "salt-secret"):
        assert secret not in text
    assert "kafka_sasl_username='roitrack'" in text


def test_cli_error_hides_secrets(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_KAFKA_SASL_PASSWORD", PASSWORD)
    clean_env.setenv("ROITRACK_PII_SALT", "salt-secret")

    with pytest.raises(SystemExit) as info:
        _load()

    text = str(info.value)
    assert "ROITRACK_KAFKA_SASL_PASSWORD is set" in text
    assert PASSWORD not in text
    assert "salt-secret" not in text


def test_cli_field_error_hides_secret_value(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("ROITRACK_REDIS_URL", "http://default:redis-secret@redis:6379/0")

    with pytest.raises(SystemExit) as info:
        _load()

    assert "redis-secret" not in str(info.value)
    assert "ROITRACK_REDIS_URL has the scheme 'http'" in str(info.value)


# --- Redis -------------------------------------------------------------------


def test_redis_defaults_standalone() -> None:
    settings = load_settings()
    client = redis_client(settings)
    sync_client = sync_redis_client(settings)
    try:
        assert redis_options(settings) == {}
        assert type(client) is aioredis.Redis
        assert type(sync_client) is redis.Redis
        assert client.connection_pool.connection_kwargs["host"] == "127.0.0.1"
    finally:
        sync_client.close()


def test_redis_url_carries_credentials_and_tls(tls: TlsFiles) -> None:
    settings = load_settings(redis_url="rediss://worker:s3cret@redis.internal:6380/2", redis_ssl_cafile=str(tls.ca_cert))

    client = redis_client(settings, decode_responses=False)
    kwargs = client.connection_pool.connection_kwargs

    assert redis_options(settings) == {"ssl_ca_certs": str(tls.ca_cert)}
    assert kwargs["username"] == "worker"
    assert kwargs["password"] == "s3cret"
    assert kwargs["host"] == "redis.internal"
    assert kwargs["port"] == 6380
    assert kwargs["db"] == 2
    assert kwargs["ssl_ca_certs"] == str(tls.ca_cert)
    assert issubclass(client.connection_pool.connection_class, aioredis.SSLConnection)


def test_redis_clients_use_hiredis() -> None:
    # hiredis is a dependency so that redis-py parses replies in C.
    # redis-py 8 falls back to its Python parser, without a warning, when hiredis is
    # missing or older than 3.2. make_connection() opens no socket.
    settings = load_settings()
    connection = redis_client(settings).connection_pool.make_connection()
    sync_client = sync_redis_client(settings)
    try:
        sync_connection = sync_client.connection_pool.make_connection()

        assert HIREDIS_AVAILABLE
        assert isinstance(connection._parser, _AsyncHiredisParser)
        assert isinstance(connection._command_packer, HiredisRespSerializer)
        assert isinstance(sync_connection._parser, _HiredisParser)
    finally:
        sync_client.close()


def test_redis_cluster_client_type() -> None:
    # The async cluster client connects on its first command, so this opens nothing.
    client = redis_client(load_settings(redis_url="redis://127.0.0.1:7000/0", redis_cluster=True))

    assert isinstance(client, aioredis.RedisCluster)


def test_redis_cafile_needs_rediss(tls: TlsFiles) -> None:
    with pytest.raises(ValidationError) as info:
        load_settings(redis_url="redis://redis:6379/0", redis_ssl_cafile=str(tls.ca_cert))

    assert "ROITRACK_REDIS_SSL_CAFILE is set, but ROITRACK_REDIS_URL does not start with rediss://" in messages(info.value)


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://redis:6379/1", "Redis Cluster has only database 0"),
    ("unix:///run/redis.sock", "unix:// socket"),
])
def test_redis_cluster_url_rejected(url: str, expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        load_settings(redis_url=url, redis_cluster=True)

    assert expected in messages(info.value)


@pytest.mark.parametrize("url", ["redis://redis:6379", "redis://redis:6379/0", "rediss://redis:6379/"])
def test_redis_cluster_url_accepted(url: str) -> None:
    assert load_settings(redis_url=url, redis_cluster=True).redis_cluster


def test_redis_url_scheme_rejected() -> None:
    with pytest.raises(ValidationError) as info:
        load_settings(redis_url="http://redis:6379/0")

    assert "has the scheme 'http'" in messages(info.value)
