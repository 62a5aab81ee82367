"""Faust's aiokafka transport, with the consumer's fetch wait taken from the settings.

faust-streaming 0.15.3 creates its consumer with a fixed ``fetch_max_wait_ms=1500``
(``AIOKafkaConsumerThread._create_worker_consumer`` in
``faust/transport/drivers/aiokafka.py``) and has no setting for it. These
subclasses change that one value after Faust has built the consumer and before
the consumer starts. Every other consumer option, and the producer, stay as
Faust creates them. ``streams.app.create_faust_app`` installs the transport.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import AppT, ConsumerT
from yarl import URL


def set_fetch_max_wait(consumer: aiokafka.AIOKafkaConsumer, fetch_max_wait_ms: int) -> None:
    """Set the fetch wait of an aiokafka consumer that has not started yet.

    aiokafka 0.14 stores the ``fetch_max_wait_ms`` argument in ``_fetch_max_wait_ms``
    and hands it to its fetcher in ``start()``. It offers no public way to change
    it after construction, so this checks that the attribute is still there.
    """
    if not isinstance(getattr(consumer, "_fetch_max_wait_ms", None), int):
        raise RuntimeError(
            f"aiokafka {aiokafka.__version__} has no _fetch_max_wait_ms on AIOKafkaConsumer, so "
            "ROITRACK_CONSUMER_FETCH_MAX_WAIT_MS cannot be applied. Adapt streams/kafka_transport.py "
            "to this aiokafka version."
        )
    if getattr(consumer, "_fetcher", None) is not None:
        raise RuntimeError("the consumer has already started; set its fetch wait before start()")
    consumer._fetch_max_wait_ms = fetch_max_wait_ms


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, creating its aiokafka consumer with the transport's fetch wait."""

    def _create_consumer(self, loop: asyncio.AbstractEventLoop) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_consumer(loop)
        set_fetch_max_wait(consumer, cast(Transport, self.transport).fetch_max_wait_ms)
        return consumer


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, running :class:`ConsumerThread`."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with a configurable consumer fetch wait, in milliseconds."""

    Consumer: ClassVar[type[ConsumerT]] = Consumer

    def __init__(self, url: list[URL], app: AppT, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        super().__init__(url, app, *args, **kwargs)
        self.fetch_max_wait_ms = fetch_max_wait_ms
