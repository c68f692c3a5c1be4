"""Sinks: the record-batch encoder, files, and real Kafka."""

from __future__ import annotations

import collections
import io
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.record.default_records import DefaultRecordBatch

from services.common.events import Rejected, parse
from services.common.settings import KafkaSettings
from services.simulator import cli
from services.simulator.sinks import FileSink, KafkaSink, encode_batch
from tests.infra import KafkaBroker


@pytest.mark.parametrize("sizes", [[1], [5, 300, 70_000, 0], [90] * 20_000])
def test_encoded_batches_decode_with_kafka_python(sizes: list[int]) -> None:
    values = [bytes([65 + i % 26]) * n for i, n in enumerate(sizes)]
    batch = DefaultRecordBatch(encode_batch(values, 1_700_000_000_000))
    assert batch.validate_crc()
    records = list(batch)
    assert [r.value for r in records] == values
    assert [r.offset for r in records] == list(range(len(values)))
    assert all(r.key is None and r.timestamp == 1_700_000_000_000 for r in records)


def test_file_sink_writes_one_line_per_row(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "x.log")
    sink.write(["a", "b"], np.array([1, 2]))
    sink.write([], np.array([], np.int64))
    sink.write(["c"], np.array([3]))
    sink.close()
    assert (tmp_path / "x.log").read_text() == "a\nb\nc\n"
    buf = io.StringIO()
    FileSink(buf).write(["z"], np.array([1]))
    assert buf.getvalue() == "z\n"


def _consume(bootstrap: str, topic: str, expected: int) -> dict[int, list[str]]:
    """Read until ``expected`` messages arrived (or 20 s passed), by partition."""
    import time

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        check_crcs=True,
        enable_auto_commit=False,
    )
    parts = consumer.partitions_for_topic(topic) or set()
    consumer.assign([TopicPartition(topic, p) for p in parts])
    out: dict[int, list[str]] = collections.defaultdict(list)
    n, deadline = 0, time.monotonic() + 20
    while n < expected and time.monotonic() < deadline:
        for tp, msgs in consumer.poll(timeout_ms=500, max_records=50_000).items():
            out[tp.partition].extend(m.value.decode() for m in msgs)
            n += len(msgs)
    consumer.close()
    return out


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["fast", "producer"])
def test_kafka_sink_delivers_every_line_in_user_order(
    kafka: KafkaBroker, topic: str, mode: str
) -> None:
    lines = [
        f"2026-03-02T14:21:{i % 60:02d},{1 + i % 97},GET /create_account" for i in range(20_000)
    ]
    users = np.array([1 + i % 97 for i in range(20_000)], np.int64)
    sink = KafkaSink(KafkaSettings(kafka_bootstrap_servers=kafka.bootstrap), topic, mode=mode)
    for i in range(0, 20_000, 3_000):
        sink.write(lines[i : i + 3_000], users[i : i + 3_000])
    sink.close()
    assert sink.sent == 20_000
    got = _consume(kafka.bootstrap, topic, 20_000)
    assert sorted(x for v in got.values() for x in v) == sorted(lines)
    for p, msgs in got.items():  # each user lives on one partition, in the order written
        assert all(int(m.split(",")[1]) % 3 == p for m in msgs)
        per_user = [m for m in msgs if m.split(",")[1] == str(msgs[0].split(",")[1])]
        assert per_user == [x for x in lines if x.split(",")[1] == msgs[0].split(",")[1]]


@pytest.mark.integration
def test_backfill_to_kafka_matches_backfill_to_file(
    kafka: KafkaBroker, topic: str, tmp_path: Path
) -> None:
    common = ["backfill", "--days", "0.05", "--users", "3000", "--movies", "800",
              "--target", "builtin:popularity", "--malformed-rate", "0.01"]  # fmt: skip
    assert cli.main([*common, "--out", str(tmp_path / "f.log"), "--no-truth"]) == 0
    rc = cli.main([*common, "--kafka", kafka.bootstrap, "--topic", topic,
                   "--run-dir", str(tmp_path / "run")])  # fmt: skip
    assert rc == 0
    file_lines = (tmp_path / "f.log").read_text().splitlines()
    got = _consume(kafka.bootstrap, topic, len(file_lines))
    kafka_lines = [x for v in got.values() for x in v]
    assert len(kafka_lines) == len(file_lines) > 10_000
    assert sorted(kafka_lines) == sorted(file_lines)
    rejected = sum(isinstance(parse(x), Rejected) for x in kafka_lines)
    assert 0.005 * len(kafka_lines) < rejected < 0.02 * len(kafka_lines)
    assert (tmp_path / "run" / "truth" / "summary.json").is_file()
