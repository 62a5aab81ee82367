"""Redis persistence of the alert state, the last sequence numbers, and the outbox of undelivered alerts.

Keys, all under ``<ns>:{alerts:<group>}`` so that they share one Redis
Cluster slot and one transaction can write them together:

- ``…:state`` (hash): ``<rule id>|<window>|<campaign id>`` to the JSON of a
  ``RuleState``: phase, open breach, cool-down end, run, baseline history.
- ``…:seq`` (hash): ``<window>|<campaign id>`` to the sequence number of the
  last RoiUpdate applied.
- ``…:outbox`` (hash): alert id to ``{"partition": N, "alert": {...}}`` for
  alerts that some sink has not received yet.
- ``…:pending:<alert id>`` (set): the sinks that have not received the alert:
  ``topic`` (the alerts topic and standard output) and ``webhook:<name>``.
  The outbox entry is deleted together with the last member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import orjson

from roitrack.alerts.state import RuleState, StateKey, state_from_json, state_to_json
from roitrack.connections import SyncRedisClient
from schemas.outputs import Alert

#: The sink name of the alerts topic together with standard output.
TOPIC_SINK = "topic"

# KEYS[1] outbox hash, KEYS[2] the alert's pending set; ARGV[1] alert id, ARGV[2] sink.
_SINK_DONE_LUA = """
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
"""


def webhook_sink(name: str) -> str:
    return f"webhook:{name}"


@dataclass(frozen=True, slots=True)
class AlertKeys:
    """Redis keys of one alerts consumer group."""

    namespace: str
    group: str

    @property
    def tag(self) -> str:
        return f"{self.namespace}:{{alerts:{self.group}}}"

    @property
    def state(self) -> str:
        return f"{self.tag}:state"

    @property
    def sequences(self) -> str:
        return f"{self.tag}:seq"

    @property
    def outbox(self) -> str:
        return f"{self.tag}:outbox"

    def pending(self, alert_id: str) -> str:
        return f"{self.tag}:pending:{alert_id}"


def sequence_field(campaign_id: str, window: str) -> str:
    return f"{window}|{campaign_id}"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """An alert with the partition of its campaign and the sinks that have not received it."""

    alert: Alert
    partition: int
    sinks: tuple[str, ...]


class AlertStore:
    """Reads and writes the alert state of one consumer group in Redis."""

    def __init__(self, client: SyncRedisClient, keys: AlertKeys) -> None:
        self.client = client
        self.keys = keys
        self._sink_done = client.register_script(_SINK_DONE_LUA)

    def load_states(self) -> dict[StateKey, RuleState]:
        raw: dict[bytes, bytes] = self.client.hgetall(self.keys.state)  # type: ignore[assignment]  # sync client
        return {
            StateKey.from_field(field.decode()): state_from_json(orjson.loads(value)) for field, value in raw.items()
        }

    def load_sequences(self) -> dict[str, int]:
        """Return the last applied sequence number by ``sequence_field``."""
        raw: dict[bytes, bytes] = self.client.hgetall(self.keys.sequences)  # type: ignore[assignment]  # sync client
        return {field.decode(): int(value) for field, value in raw.items()}

    def write(
        self,
        states: dict[StateKey, RuleState],
        sequences: dict[str, int],
        outbox: Iterable[OutboxEntry],
    ) -> None:
        """Write changed states, sequence numbers and new outbox entries in one transaction."""
        entries = list(outbox)
        if not states and not sequences and not entries:
            return
        pipe = self.client.pipeline(transaction=True)
        if states:
            pipe.hset(self.keys.state, mapping={
                key.field(): orjson.dumps(state_to_json(state)) for key, state in states.items()
            })
        if sequences:
            pipe.hset(self.keys.sequences, mapping={field: value for field, value in sequences.items()})
        for entry in entries:
            value = orjson.dumps({"partition": entry.partition, "alert": entry.alert.model_dump(mode="json")})
            pipe.hset(self.keys.outbox, entry.alert.alert_id, value)
            pipe.sadd(self.keys.pending(entry.alert.alert_id), *entry.sinks)
        pipe.execute()

    def sink_done(self, alert_id: str, sink: str) -> None:
        """Record that a sink received the alert; the outbox entry goes with the last sink."""
        self._sink_done(keys=[self.keys.outbox, self.keys.pending(alert_id)], args=[alert_id, sink])

    def outbox(self) -> list[OutboxEntry]:
        """Return the undelivered alerts, oldest first, each with its remaining sinks."""
        raw: dict[bytes, bytes] = self.client.hgetall(self.keys.outbox)  # type: ignore[assignment]  # sync client
        entries: list[OutboxEntry] = []
        for field, value in raw.items():
            data: dict[str, Any] = orjson.loads(value)
            members: set[bytes] = self.client.smembers(self.keys.pending(field.decode()))  # type: ignore[assignment]  # sync client
            sinks = tuple(sorted(member.decode() for member in members))
            entries.append(OutboxEntry(Alert.model_validate(data["alert"]), int(data["partition"]), sinks))
        entries.sort(key=lambda entry: (entry.alert.emitted_at, entry.alert.alert_id))
        return entries
