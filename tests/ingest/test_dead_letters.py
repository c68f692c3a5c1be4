"""The dead-letter sink is at least once and says so: resent letters are counted."""

from __future__ import annotations

from typing import Any

from services.ingest import metrics
from services.ingest.consumer import KafkaDeadLetters
from services.ingest.core import DeadLetter


class Acked:
    """A send's future that has its acknowledgement."""

    def get(self, timeout: float | None = None) -> None:
        return None


class FlakyProducer:
    """Accepts every send; the first flush fails as if the broker went away mid-batch."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.flushes = 0

    def send(self, topic: str, value: bytes, **kw: Any) -> Acked:
        self.sent.append(value)
        return Acked()

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        if self.flushes == 1:
            raise TimeoutError("broker gone")


def test_letters_resent_after_a_failure_are_counted() -> None:
    letters = [DeadLetter(0, o, 1, "bad_rating", "x", b"line %d" % o) for o in range(3)]
    sink = KafkaDeadLetters(FlakyProducer(), "dlq")  # type: ignore[arg-type]
    before = metrics.DLQ_RESENT._value.get()
    try:
        sink(letters)
    except TimeoutError:
        pass
    else:
        raise AssertionError("the first delivery must fail")
    sink([*letters, DeadLetter(1, 9, 1, "bad_rating", "x", b"new")])
    sink([DeadLetter(1, 10, 1, "bad_rating", "x", b"newer")])
    assert metrics.DLQ_RESENT._value.get() - before == 3
    assert sink.producer.sent.count(b"line 0") == 2  # type: ignore[attr-defined]
