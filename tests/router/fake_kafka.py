"""A stand-in for confluent-kafka's ``Producer`` for the exposure log's unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FakeError:
    """A librdkafka error with its code."""

    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def __str__(self) -> str:
        return f"error {self._code}"


class FakeProducer:
    """Holds produced records until ``poll`` while ``down`` is False; bounded like librdkafka.

    Only failures are reported to ``on_delivery`` (``delivery.report.only.error``).
    """

    def __init__(self, on_delivery: Callable[[Any, Any], None], capacity: int = 100_000) -> None:
        self.on_delivery = on_delivery
        self.capacity = capacity
        self.down = False
        self.fail_next = 0  # how many of the next deliveries fail for good
        self.queue: list[tuple[str, bytes, bytes]] = []
        self.records: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes) -> None:
        if len(self.queue) >= self.capacity:
            raise BufferError("Local: Queue full")
        self.queue.append((topic, key, value))

    def poll(self, timeout: float = 0.0) -> int:
        if self.down:
            return 0
        served = 0
        while self.queue:
            record = self.queue[0]
            if self.fail_next:
                self.fail_next -= 1
                self.on_delivery(FakeError(-192), record)  # message timed out
                served += 1
            else:
                self.records.append(record)
            self.queue.pop(0)
        return served

    def flush(self, timeout: float = 0.0) -> int:
        self.poll(timeout)
        return len(self.queue)

    def purge(self, in_queue: bool = True, in_flight: bool = True) -> None:
        while self.queue:
            self.on_delivery(FakeError(-152), self.queue[0])
            self.queue.pop(0)

    def __len__(self) -> int:
        return len(self.queue)
