"""Where stream lines go: a file, or a Kafka topic (one line per message).

``KafkaSink`` encodes Kafka record batches (format v2) itself and sends them with
kafka-python's network client as produce requests: kafka-python's ``KafkaProducer.send``
costs about 20 µs per message in pure Python, which caps a single process near 45,000
messages/s, while encoding a whole batch at once costs about 1 µs per message.
``mode="producer"`` uses the ordinary ``KafkaProducer`` instead (slower, for comparison).
Lines are partitioned by user id so each user's events keep their order.

Duplicates: ``mode="producer"`` is idempotent (``services.common.kafka.make_producer``): its
retries never write a line twice.  The fast sink sends batches without a producer id, so the
broker cannot deduplicate them, and it therefore never retries: any failed or unanswered
request raises ``KafkaError``.  A batch whose acknowledgement was lost may still have landed,
so re-running a backfill after such an error can duplicate lines (the store keeps them, as it
keeps every line of the stream).
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from pathlib import Path
from typing import IO, Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from kafka.client_async import KafkaClient
from kafka.errors import KafkaError, for_code
from kafka.protocol.produce import ProduceRequest
from kafka.structs import TopicPartition

try:  # hardware CRC32C; the pure-Python fallback is far too slow for bulk output
    from crc32c import crc32c as _crc32c
except ImportError:  # pragma: no cover
    from kafka.record.util import calc_crc32c as _crc32c  # type: ignore[no-redef]

from services.common.kafka import make_producer
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Receives lines in stream order."""

    def write(self, lines: list[str], users: npt.NDArray[np.int64]) -> None:
        """Write lines; ``users`` gives each line's user (for partitioning)."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


class FileSink:
    """Newline-terminated lines appended to a file (or any text stream)."""

    def __init__(self, path: str | Path | IO[str]) -> None:
        if isinstance(path, str | Path):
            self._f: IO[str] = Path(path).open("w", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._own = True
        else:
            self._f, self._own = path, False

    def write(self, lines: list[str], users: npt.NDArray[np.int64]) -> None:
        """Write lines, one per row."""
        if lines:
            self._f.write("\n".join(lines))
            self._f.write("\n")

    def flush(self) -> None:
        """Push written lines to the file now (live mode)."""
        self._f.flush()

    def close(self) -> None:
        """Close the file we opened."""
        self._f.flush()
        if self._own:
            self._f.close()


class MemorySink:
    """Keeps every line in a list (tests)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, lines: list[str], users: npt.NDArray[np.int64]) -> None:
        """Append lines."""
        self.lines.extend(lines)

    def close(self) -> None:
        """Nothing to release."""


# --- Kafka record batch v2 encoding -------------------------------------------------------


def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


_VARINT: Final = [_zigzag_varint(i) for i in range(1 << 16)]
_HEADER: Final = struct.Struct(">qiibIhiqqqhii")
MAX_BATCH_BYTES: Final = 900_000
"""Below the broker's default ``message.max.bytes`` (1 MiB) with room for the header."""


def encode_batch(values: list[bytes], timestamp_ms: int) -> bytes:
    """One uncompressed v2 record batch holding ``values`` (no keys, no headers)."""
    parts: list[bytes] = []
    append = parts.append
    v = _VARINT
    for i, value in enumerate(values):
        lv = len(value)
        head = b"\x00\x00" + v[i] + b"\x01" + (v[lv] if lv < 65536 else _zigzag_varint(lv))
        body_len = len(head) + lv + 1
        append(v[body_len] if body_len < 65536 else _zigzag_varint(body_len))
        append(head)
        append(value)
        append(b"\x00")
    records = b"".join(parts)
    n = len(values)
    # attributes..end is what the CRC covers: pack with a zero CRC, then patch it in.
    header = _HEADER.pack(
        0, 49 + len(records), -1, 2, 0, 0, n - 1, timestamp_ms, timestamp_ms, -1, -1, -1, n
    )
    crc = _crc32c(memoryview(header[21:] + records))
    return header[:17] + struct.pack(">I", crc) + header[21:] + records


class KafkaSink:
    """Lines to a Kafka topic as fast as one Python process can encode them.

    Fast mode does not retry (see the module docstring): a failure raises and may leave the last
    batches in flight written or not; ``mode="producer"`` retries idempotently.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        mode: str = "fast",
        max_in_flight: int = 5,
    ) -> None:
        self.topic = topic
        self.mode = mode
        self.sent = 0
        if mode == "producer":
            # Idempotence needs acks='all' (make_producer): slower than acks=1, never doubled.
            self._producer = make_producer(settings, linger_ms=50, batch_size=1 << 20)
            parts = self._producer.partitions_for(topic)
            self.n_partitions = len(parts)
            return
        servers = [s.strip() for s in settings.kafka_bootstrap_servers.split(",") if s.strip()]
        self._client = KafkaClient(
            bootstrap_servers=servers,
            request_timeout_ms=max(settings.kafka_request_timeout_ms, 30_000),
            api_version_auto_timeout_ms=int(settings.kafka_connect_timeout_s * 1000),
            max_in_flight_requests_per_connection=max_in_flight,
            client_id="marquee-simulator",
        )
        self._timeout_ms = settings.kafka_request_timeout_ms
        self._max_in_flight = max_in_flight
        deadline = time.monotonic() + settings.kafka_connect_timeout_s
        fut = self._client.set_topics([topic])
        self._client.poll(future=fut, timeout_ms=int(settings.kafka_connect_timeout_s * 1000))
        parts_set = self._client.cluster.partitions_for_topic(topic)
        while not parts_set and time.monotonic() < deadline:
            fut = self._client.cluster.request_update()
            self._client.poll(future=fut, timeout_ms=1000)
            parts_set = self._client.cluster.partitions_for_topic(topic)
        if not parts_set:
            raise KafkaError(f"topic {topic!r} not found on {servers}")
        self.n_partitions = len(parts_set)
        self._leader = {
            p: self._client.cluster.leader_for_partition(TopicPartition(topic, p))
            for p in sorted(parts_set)
        }
        self._version = self._client.api_version(ProduceRequest, max_version=7)
        self._inflight: deque[Any] = deque()
        self._pending: dict[int, list[bytes]] = {p: [] for p in self._leader}
        self._pending_bytes = dict.fromkeys(self._leader, 0)

    def write(self, lines: list[str], users: npt.NDArray[np.int64]) -> None:
        """Queue lines by partition (``user % partitions``); send full batches."""
        if not lines:
            return
        part = (np.abs(users) % self.n_partitions).tolist()
        if self.mode == "producer":
            send = self._producer.send
            for line, p in zip(lines, part, strict=True):
                send(self.topic, value=line.encode(), partition=p)
            self.sent += len(lines)
            return
        pend, nbytes = self._pending, self._pending_bytes
        for line, p in zip(lines, part, strict=True):
            b = line.encode()
            pend[p].append(b)
            nbytes[p] += len(b) + 8
            if nbytes[p] >= MAX_BATCH_BYTES:
                self._send_partition(p)

    def _send_partition(self, p: int) -> None:
        values = self._pending[p]
        if not values:
            return
        self._pending[p], self._pending_bytes[p] = [], 0
        batch = encode_batch(values, int(time.time() * 1000))
        node = self._leader[p]
        while len(self._inflight) >= self._max_in_flight or not self._client.ready(node):
            self._reap(block=True)
        req = ProduceRequest[self._version](
            transactional_id=None,
            required_acks=-1,
            timeout=self._timeout_ms,
            topics=[(self.topic, [(p, batch)])],
        )
        self._inflight.append((self._client.send(node, req), len(values)))
        self._reap(block=False)

    def _reap(self, block: bool) -> None:
        """Collect finished produce responses; raise on any broker error."""
        if block:
            if self._inflight:
                self._client.poll(future=self._inflight[0][0], timeout_ms=self._timeout_ms)
            else:
                self._client.poll(timeout_ms=50)
        else:
            self._client.poll(timeout_ms=0)
        while self._inflight and self._inflight[0][0].is_done:
            fut, n = self._inflight.popleft()
            if fut.failed():
                raise KafkaError(f"produce request failed: {fut.exception}")
            for _topic, partitions in fut.value.topics:
                for pinfo in partitions:
                    if pinfo[1] != 0:
                        raise for_code(pinfo[1])(f"produce to partition {pinfo[0]} failed")
            self.sent += n

    def flush(self) -> None:
        """Send every queued line and wait for the broker to acknowledge all of them."""
        if self.mode == "producer":
            self._producer.flush()
            return
        for p in self._pending:
            self._send_partition(p)
        while self._inflight:
            self._reap(block=True)

    def close(self) -> None:
        """Flush, then close the connection."""
        self.flush()
        if self.mode == "producer":
            self._producer.close()
        else:
            self._client.close()
