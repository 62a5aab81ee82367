"""Client options for Kafka and Redis, built from the connection settings.

Every roitrack Kafka or Redis client is created with the options below, so
TLS, SASL and Redis Cluster are set in one place. ``Settings`` has already
checked the combinations (SASL protocols need a mechanism, user name and
password; certificate files must be readable), so these functions only
translate. With the defaults, PLAINTEXT and a standalone Redis, they return
the clients' own defaults.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any, TypeAlias

import redis
import redis.asyncio as aioredis
from aiokafka.helpers import create_ssl_context

from roitrack.settings import KAFKA_SASL_PROTOCOLS, KAFKA_SSL_PROTOCOLS, Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

#: The async client the worker uses: standalone or cluster, by ``ROITRACK_REDIS_CLUSTER``.
AsyncRedisClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster
#: The synchronous client of the demo and the command-line tools.
SyncRedisClient: TypeAlias = redis.Redis | redis.RedisCluster


def _sasl_options(settings: Settings) -> dict[str, Any]:
    return {
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_sasl_username,
        "sasl_plain_password": settings.kafka_sasl_password,
    }


def kafka_python_config(settings: Settings) -> dict[str, Any]:
    """Build the security options of a kafka-python KafkaProducer, KafkaConsumer or KafkaAdminClient.

    kafka-python takes the SCRAM credentials in ``sasl_plain_username`` and
    ``sasl_plain_password`` too. Without ``ssl_cafile`` it trusts the system's CA store.
    """
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {"security_protocol": protocol}
    if protocol in KAFKA_SASL_PROTOCOLS:
        config.update(_sasl_options(settings))
    if protocol in KAFKA_SSL_PROTOCOLS:
        files = {
            "ssl_cafile": settings.kafka_ssl_cafile,
            "ssl_certfile": settings.kafka_ssl_certfile,
            "ssl_keyfile": settings.kafka_ssl_keyfile,
        }
        config.update({name: path for name, path in files.items() if path})
    return config


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Create the TLS context of aiokafka and Faust clients, or return None when the protocol has no TLS.

    The context verifies the broker's certificate and host name. It reads the
    files when called, so a rotated certificate needs a restart.
    """
    if settings.kafka_security_protocol not in KAFKA_SSL_PROTOCOLS:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile or None,
        certfile=settings.kafka_ssl_certfile or None,
        keyfile=settings.kafka_ssl_keyfile or None,
    )
    return context


def aiokafka_config(settings: Settings) -> dict[str, Any]:
    """Build the security options of an aiokafka AIOKafkaProducer or AIOKafkaConsumer."""
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {"security_protocol": protocol}
    if protocol in KAFKA_SASL_PROTOCOLS:
        config.update(_sasl_options(settings))
    context = kafka_ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    return config


def faust_broker_credentials(settings: Settings) -> CredentialsT | None:
    """Build Faust's ``broker_credentials``: SSL or SASL credentials, or None for PLAINTEXT.

    Faust derives the protocol from the type: ``SASLCredentials`` with a TLS
    context is SASL_SSL, without one SASL_PLAINTEXT.
    """
    import faust  # imported here: the commands without a Faust app do not pay for its import

    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol in KAFKA_SASL_PROTOCOLS:
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password,
            ssl_context=context,
            mechanism=settings.kafka_sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def redis_options(settings: Settings) -> dict[str, Any]:
    """Build the options every Redis client gets besides its URL.

    The user name, password, TLS (``rediss://``) and database come from the URL.
    ``Settings`` accepts ``ROITRACK_REDIS_SSL_CAFILE`` only with a rediss:// URL,
    because redis-py's plain connection rejects ``ssl_ca_certs``.
    """
    options: dict[str, Any] = {}
    if settings.redis_ssl_cafile:
        options["ssl_ca_certs"] = settings.redis_ssl_cafile
    return options


def redis_client(settings: Settings, **options: Any) -> AsyncRedisClient:
    """Create an async Redis client from the settings: a ``RedisCluster`` or a ``Redis``.

    ``options`` go to redis-py unchanged, for example ``decode_responses``. The
    caller closes the client with ``aclose()``. A cluster client connects and
    reads the slot map on its first command.
    """
    merged = {**redis_options(settings), **options}
    if settings.redis_cluster:
        return aioredis.RedisCluster.from_url(settings.redis_url, **merged)
    return aioredis.Redis.from_url(settings.redis_url, **merged)


def sync_redis_client(settings: Settings, **options: Any) -> SyncRedisClient:
    """Create a synchronous Redis client from the settings: a ``RedisCluster`` or a ``Redis``.

    The caller closes it with ``close()``. A cluster client connects to the
    node in the URL when it is created, and raises when that node does not reply.
    """
    merged = {**redis_options(settings), **options}
    if settings.redis_cluster:
        return redis.RedisCluster.from_url(settings.redis_url, **merged)
    return redis.Redis.from_url(settings.redis_url, **merged)
