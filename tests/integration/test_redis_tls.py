"""Redis over TLS with a private CA: rediss:// plus ROITRACK_REDIS_SSL_CAFILE.

The module creates a CA and a server certificate for 127.0.0.1 with openssl,
and starts a redis-server that listens on a TLS port only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from roitrack.connections import sync_redis_client
from roitrack.embedded import LOOPBACK_HOST, redis_answers
from roitrack.settings import Settings
from streams.state import FencedBatch, Keys, StateStore, connect
from tests.integration.redis_servers import RedisNode, missing_redis_tools, redis_supports_tls, redis_tls_server
from tests.tls_files import TlsFiles, make_tls_files

SKIP_REASON = missing_redis_tools() or redis_supports_tls()

pytestmark = pytest.mark.skipif(bool(SKIP_REASON), reason=SKIP_REASON or "TLS available")


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_node(tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles) -> Iterator[RedisNode]:
    with redis_tls_server(tmp_path_factory.mktemp("redis-tls"), tls_files) as node:
        yield node


def tls_settings(node: RedisNode, cafile: Path | None) -> Settings:
    return Settings(
        redis_url=f"rediss://{LOOPBACK_HOST}:{node.port}/0",
        redis_ssl_cafile=str(cafile) if cafile is not None else "",
        redis_namespace=f"rt-tls-{uuid.uuid4().hex[:8]}",
    )


def test_sync_client_trusts_private_ca(tls_node: RedisNode, tls_files: TlsFiles) -> None:
    client = sync_redis_client(tls_settings(tls_node, tls_files.ca_cert))
    try:
        assert client.ping()
        assert client.connection_pool.connection_kwargs["ssl_ca_certs"] == str(tls_files.ca_cert)
    finally:
        client.close()


def test_worker_store_over_tls(tls_node: RedisNode, tls_files: TlsFiles) -> None:
    settings = tls_settings(tls_node, tls_files.ca_cert)

    async def scenario() -> dict[bytes, bytes]:
        store = StateStore(connect(settings), Keys(settings.redis_namespace))
        offsets_key = store.keys.offsets(store.keys.person_tag(0))
        try:
            batch = FencedBatch(offsets_key)
            batch.cover("touchpoints", 0, 2, -1)
            batch.command("HINCRBY", store.keys.person_stats(0), "touchpoints", 3)
            await store.apply(batch)
            offsets: dict[bytes, bytes] = await store.client.hgetall(offsets_key)
            await store.client.delete(offsets_key, store.keys.person_stats(0))
            return offsets
        finally:
            await store.close()

    assert asyncio.run(scenario()) == {b"touchpoints": b"2"}


@pytest.mark.parametrize("trusted", ["system store", "other CA"])
def test_unknown_ca_rejected(tls_node: RedisNode, tls_files: TlsFiles, trusted: str) -> None:
    cafile = None if trusted == "system store" else tls_files.other_ca_cert
    client = sync_redis_client(tls_settings(tls_node, cafile))
    try:
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            client.ping()
    finally:
        client.close()


def test_plain_connection_rejected(tls_node: RedisNode) -> None:
    client = redis.Redis(host=LOOPBACK_HOST, port=tls_node.port, socket_timeout=2)
    try:
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            client.ping()
    finally:
        client.close()


def test_probe_uses_cafile(tls_node: RedisNode, tls_files: TlsFiles) -> None:
    url = f"rediss://{LOOPBACK_HOST}:{tls_node.port}/0"

    assert redis_answers(url, ssl_cafile=str(tls_files.ca_cert))
    assert not redis_answers(url)
