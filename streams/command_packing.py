"""Faster Redis command packing for the worker's clients.

redis-py 8 packs a command with hiredis, but first passes every argument
through its Python ``Encoder.encode`` in a generator. The fenced batch write
sends thousands of arguments per call, so that loop was the largest single cost
in the batched profile (see docs/benchmarks.md). ``hiredis.pack_command``
encodes ``bytes``, ``str`` (as UTF-8), ``int`` and ``float`` itself, in C, with
the same bytes on the wire: floats as ``repr`` gives them, as redis-py does.
A command with any other argument type (``bool``, ``bytearray``,
``memoryview``, ``None``, subclasses) or an int wider than 64 bits goes to
redis-py's own packer, which converts it or raises its usual ``DataError``.

The packer is installed per connection class, so pools and cluster nodes
created later use it too, and only when the connection encodes text as strict
UTF-8 (redis-py's default), because hiredis always encodes ``str`` that way.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis


#: Argument types hiredis encodes exactly as redis-py does. Subclasses (bool,
#: enums, numpy scalars) and other buffers go to redis-py's packer.
_DIRECT_TYPES = frozenset({bytes, str, int, float})


class _Packer(Protocol):
    def pack(self, *args: Any) -> list[bytes]: ...


class DirectHiredisPacker:
    """Command packer that hands the arguments to ``hiredis.pack_command`` unchanged."""

    def __init__(self, fallback: _Packer) -> None:
        self.fallback = fallback

    def pack(self, *args: Any) -> list[bytes]:
        command = args[0]
        # redis-py splits a command name with a space ("CLIENT SETNAME") into its words.
        if isinstance(command, str):
            words = tuple(command.encode().split())
        elif isinstance(command, bytes):
            words = tuple(command.split()) if b" " in command else (command,)
        else:
            return self.fallback.pack(*args)
        rest = args[1:]
        kinds = set(map(type, rest))
        if not kinds <= _DIRECT_TYPES or (int in kinds and not _small_ints(rest)):
            return self.fallback.pack(*args)
        return [hiredis.pack_command(words + rest)]


def _small_ints(args: tuple[Any, ...]) -> bool:
    """Return True when every int argument fits in 64 bits.

    hiredis 3.5 does not check for a failed ``repr`` of an int, and an int too
    long for ``repr`` (4,300 digits by default) crashes the process there, where
    redis-py raises ``ValueError``. Redis parses integer arguments as 64-bit numbers anyway.
    """
    return all(arg.bit_length() <= 64 for arg in args if type(arg) is int)


def _uses_strict_utf8(connection: AbstractConnection) -> bool:
    encoder = connection.encoder
    return bool(encoder.encoding.lower().replace("-", "") == "utf8" and encoder.encoding_errors == "strict")


ConnectionT = TypeVar("ConnectionT", bound=AbstractConnection)

#: One subclass per connection class, so that repeated calls return the same class.
_FAST_CLASSES: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def fast_packing_class(connection_class: type[ConnectionT]) -> type[ConnectionT]:
    """Return a subclass of ``connection_class`` whose connections pack commands with ``DirectHiredisPacker``."""
    if connection_class in _FAST_CLASSES.values():
        return connection_class
    known = _FAST_CLASSES.get(connection_class)
    if known is not None:
        return known  # type: ignore[return-value]  # stored under its own base class

    class FastPacking(connection_class):  # type: ignore[valid-type,misc]  # a subclass of a class given at run time
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            packer = getattr(self, "_command_packer", None)
            if packer is not None and _uses_strict_utf8(self):
                self._command_packer = DirectHiredisPacker(packer)

    FastPacking.__name__ = FastPacking.__qualname__ = f"FastPacking{connection_class.__name__}"
    _FAST_CLASSES[connection_class] = FastPacking
    return FastPacking


def use_fast_packing(client: aioredis.Redis | aioredis.RedisCluster) -> None:
    """Make every connection the client opens from now on pack commands with ``DirectHiredisPacker``.

    Call it before the first command. Without hiredis it changes nothing.
    """
    if not HIREDIS_AVAILABLE:
        return
    if isinstance(client, aioredis.RedisCluster):
        # NOTE: redis-py's cluster client fixes its connection class in __init__, so
        # this sets it where the nodes read it: the shared connection options for
        # nodes found later, and each start-up node.
        manager = client.nodes_manager
        manager.connection_kwargs["connection_class"] = fast_packing_class(manager.connection_kwargs["connection_class"])
        for node in manager.startup_nodes.values():
            node.connection_class = fast_packing_class(node.connection_class)
        return
    pool = client.connection_pool
    pool.connection_class = fast_packing_class(pool.connection_class)
