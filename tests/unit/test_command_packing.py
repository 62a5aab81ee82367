"""The worker's Redis command packer sends the same bytes as redis-py's own."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection, SSLConnection
from redis.exceptions import DataError

from streams.command_packing import DirectHiredisPacker, fast_packing_class, use_fast_packing

COMMANDS: list[tuple[Any, ...]] = [
    ("SET", "key", "value"),
    (b"HSET", b"hash", "field", 7, b"\x00\xffbinary", -3),
    ("EVALSHA", "0" * 40, 2, "k1", "k2", *[f"arg{i}" for i in range(500)], 12.5, 0.1, 1e20),
    ("CLIENT SETNAME", "roitrack"),
    (b"CLIENT SETNAME", b"roitrack"),
    ("SET", "text", "naïve €"),
    ("SET", "big", 2**63 - 1),
    ("SET", "empty", ""),
    ("SET", "floats", -0.0, float("nan"), float("-inf")),
]


def _wire(parts: list[Any]) -> bytes:
    """Join packed parts; redis-py's Python packer returns memoryviews among them."""
    return b"".join(bytes(part) for part in parts)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: str(args[0]))
def test_packer_matches_redis_py(args: tuple[Any, ...]) -> None:
    connection = Connection()
    expected = b"".join(connection.pack_command(*args))

    packed = b"".join(DirectHiredisPacker(connection._command_packer).pack(*args))

    assert packed == expected


@pytest.mark.parametrize(
    "value", [bytearray(b"abc"), memoryview(b"abc"), memoryview(b"abcde")[::2], 2**70], ids=repr,
)
def test_other_arguments_fall_back_to_redis_py(value: Any) -> None:
    connection = Connection()

    packed = _wire(DirectHiredisPacker(connection._command_packer).pack("SET", "key", value))

    assert packed == _wire(connection.pack_command("SET", "key", value))


def test_int_too_long_for_repr_raises() -> None:
    # hiredis would crash the process on it; redis-py raises.
    packer = DirectHiredisPacker(Connection()._command_packer)

    with pytest.raises(ValueError):
        packer.pack("SET", "key", 10**5000)


@pytest.mark.parametrize("value", [True, None])
def test_invalid_argument_raises_redis_py_error(value: Any) -> None:
    packer = DirectHiredisPacker(Connection()._command_packer)

    with pytest.raises(DataError):
        packer.pack("SET", "key", value)


def test_connection_class_gets_the_packer() -> None:
    fast = fast_packing_class(Connection)

    assert fast is fast_packing_class(Connection)
    assert issubclass(fast, Connection)
    assert isinstance(fast()._command_packer, DirectHiredisPacker)


def test_other_encoding_keeps_redis_py_packer() -> None:
    connection = fast_packing_class(Connection)(encoding="latin-1")

    assert not isinstance(connection._command_packer, DirectHiredisPacker)


def test_client_pools_use_the_fast_class() -> None:
    plain = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    secure = aioredis.Redis.from_url("rediss://127.0.0.1:6379/0")

    use_fast_packing(plain)
    use_fast_packing(secure)

    assert plain.connection_pool.connection_class is fast_packing_class(Connection)
    assert secure.connection_pool.connection_class is fast_packing_class(SSLConnection)
