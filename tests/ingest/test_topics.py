"""Several topics in one store: positions, stream time, quarantine and old stores per topic."""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from services.common.events import format_line, parse_time
from services.common.store import EventStoreReader
from services.ingest.consumer import KafkaDeadLetters
from services.ingest.core import DeadLetter, Ingestor
from services.ingest.settings import IngestSettings
from services.ingest.store import COMMITS_DIR, META_OFFSETS, EventStore
from tests.ingest.streamgen import MALFORMED, exposure_lines, lines

Rec = namedtuple("Rec", "offset value timestamp")
KAFKA_MS = 1_796_083_200_000  # 2026-12-01: the lines went into Kafka after their own time
DAY_NS = 86_400 * 10**9


def recs(values: list[str] | list[bytes], start: int = 0, kafka_ms: int = KAFKA_MS) -> list[Rec]:
    return [Rec(start + i, v if isinstance(v, bytes) else v.encode(), kafka_ms) for i, v in
            enumerate(values)]  # fmt: skip


def test_two_topics_with_the_same_partitions_and_offsets_share_one_store(tmp_path: Path) -> None:
    stream, shown = lines(300, seed=1), exposure_lines(200, seed=2)
    ing = Ingestor(EventStore(tmp_path, writer=True))
    ing.add(0, recs(stream), "movielog")
    ing.add(0, recs(shown), "exposures")  # same partition, same offsets: not a replay
    commit = ing.flush()
    assert commit is not None
    assert commit.offsets == {("movielog", 0): (0, 299), ("exposures", 0): (0, 199)}
    manifest = json.loads((tmp_path / COMMITS_DIR / "c0000000001.json").read_text())
    assert manifest["format"] == 2
    assert manifest["offsets"] == {"exposures": {"0": [0, 199]}, "movielog": {"0": [0, 299]}}
    assert set(manifest["heads"]) == {"exposures", "movielog"}
    # Every row says where it came from; the exposure file's metadata names its topic.
    reader = EventStoreReader(tmp_path)
    assert set(reader.read("watch")["topic"].to_pylist()) == {"movielog"}
    exposures = reader.read("exposure")
    assert exposures.num_rows == 200 and set(exposures["topic"].to_pylist()) == {"exposures"}
    meta = json.loads(pq.read_schema(reader.files("exposure")[0]).metadata[META_OFFSETS])
    assert meta == {"exposures": {"0": [0, 199]}}
    assert sorted(format_line(e) for _, _, e in reader.iter_events()) == sorted(stream + shown)

    # After a restart each topic resumes at its own offset; replays of either are skipped.
    ing.store.close()
    again = Ingestor(EventStore(tmp_path, writer=True))
    assert (again.next_offset(0, "movielog"), again.next_offset(0, "exposures")) == (300, 200)
    more = exposure_lines(250, seed=2)  # the first 200 are the same lines at the same offsets
    assert again.add(0, recs(more), "exposures") == 50
    assert again.add(0, recs(stream), "movielog") == 0
    again.flush()
    assert EventStoreReader(tmp_path).next_offsets() == {
        ("movielog", 0): 300,
        ("exposures", 0): 250,
    }
    assert EventStoreReader(tmp_path).counts()["exposure"] == 250


def test_each_topic_keeps_its_own_stream_time(tmp_path: Path) -> None:
    """Exposures are live while the stream is backfilled ten days behind: neither clock may
    judge the other's lines."""
    t0 = parse_time("2026-03-02T00:00:00")[0]  # type: ignore[index]
    backfill = lines(400, seed=3, start_ns=t0)
    live = exposure_lines(100, seed=4, start_ns=t0 + 10 * DAY_NS)
    live_ms = (t0 + 10 * DAY_NS) // 10**6 + 3_600_000  # record time of a live topic: just after
    ing = Ingestor(EventStore(tmp_path, writer=True), max_lateness_s=7 * 86_400)
    ing.add(0, recs(backfill[:200]), "movielog")
    ing.add(0, recs(live, kafka_ms=live_ms), "exposures")
    ing.add(0, recs(backfill[200:], 200), "movielog")  # ten days behind the exposures' clock
    ing.flush()
    store = EventStoreReader(tmp_path)
    assert store.counts().get("quarantine", 0) == 0
    assert store.counts()["exposure"] == 100
    heads = store.heads()
    assert heads[("exposures", 0)] - heads[("movielog", 0)] > 9 * DAY_NS
    assert ing.stream_time(0, "movielog") == heads[("movielog", 0)]
    # A restart recovers both clocks: a stream line ten days old is still not too late.
    ing.store.close()
    again = Ingestor(EventStore(tmp_path, writer=True), max_lateness_s=7 * 86_400)
    assert again.stream_time(0, "exposures") == heads[("exposures", 0)]
    again.add(0, recs(lines(20, seed=5, start_ns=t0 + DAY_NS), 400), "movielog")
    again.flush()
    assert EventStoreReader(tmp_path).counts().get("quarantine", 0) == 0


def test_quarantine_and_dead_letters_name_the_source_topic(tmp_path: Path) -> None:
    letters: list[DeadLetter] = []
    ing = Ingestor(EventStore(tmp_path, writer=True), dead_letters=letters.extend)
    bad = MALFORMED[1][0]
    ing.add(1, recs([*lines(20, seed=6), bad]), "movielog")
    ing.add(1, recs([*exposure_lines(20, seed=7), bad]), "exposures")
    ing.flush()
    q = EventStoreReader(tmp_path).read("quarantine").to_pylist()
    assert sorted((r["topic"], r["partition"], r["offset"], r["raw"]) for r in q) == [
        ("exposures", 1, 20, bad),
        ("movielog", 1, 20, bad),
    ]
    assert sorted((d.topic, d.partition, d.offset) for d in letters) == [
        ("exposures", 1, 20),
        ("movielog", 1, 20),
    ]

    sent: list[tuple[bytes, dict[str, bytes]]] = []

    class Producer:
        def send(self, topic: str, value: bytes, key: bytes, headers: list) -> Producer:
            sent.append((key, dict(headers)))
            return self

        def flush(self, timeout: float) -> None: ...

        def get(self, timeout: float) -> None: ...

    KafkaDeadLetters(Producer(), "dlq")(letters)  # type: ignore[arg-type]
    assert sorted((k, h["topic"], h["partition"], h["offset"]) for k, h in sent) == [
        (b"exposures:1:20", b"exposures", b"1", b"20"),
        (b"movielog:1:20", b"movielog", b"1", b"20"),
    ]


def _downgrade(root: Path) -> None:
    """Rewrite a store as it was before topics were recorded (manifests, files, metadata)."""
    for m in (root / COMMITS_DIR).glob("c*.json"):
        doc = json.loads(m.read_text())
        del doc["format"]
        doc["offsets"] = doc["offsets"].get("movielog", {})
        doc["heads"] = doc["heads"].get("movielog", {})
        for f in doc["files"]:
            f["offsets"] = f["offsets"]["movielog"]
        m.write_text(json.dumps(doc))
    for f in root.rglob("*.parquet"):
        t = pq.read_table(f)
        meta = dict(t.schema.metadata)
        meta[META_OFFSETS] = json.dumps(json.loads(meta[META_OFFSETS])["movielog"]).encode()
        pq.write_table(t.drop_columns(["topic"]).replace_schema_metadata(meta), f)


def test_a_store_from_before_topics_opens_as_its_primary_topic_for_good(tmp_path: Path) -> None:
    stream = lines(600, seed=8)
    ing = Ingestor(EventStore(tmp_path, writer=True))
    ing.add(0, recs(stream[:400]))
    ing.flush()
    ing.store.close()
    _downgrade(tmp_path)
    assert "topic" not in pq.read_schema(next(tmp_path.rglob("*.parquet"))).names

    # Opened with its topic first: the old offsets and rows are that topic's.
    store = EventStore(tmp_path, writer=True, primary_topic="movielog")
    assert store.next_offsets() == {("movielog", 0): 400}
    assert store.legacy_topic == "movielog"
    assert set(store.read("watch")["topic"].to_pylist()) == {"movielog"}
    again = Ingestor(store)
    assert again.add(0, recs(stream), "movielog") == 200  # the first 400 are replays
    assert again.add(0, recs(exposure_lines(30, seed=9)), "exposures") == 30
    again.flush()
    manifest = json.loads((tmp_path / COMMITS_DIR / "c0000000002.json").read_text())
    assert manifest["legacy_topic"] == "movielog"

    # The new commit pinned the old offsets' topic: a later primary topic cannot take them.
    reader = EventStoreReader(tmp_path, primary_topic="exposures")
    assert reader.next_offsets() == {("movielog", 0): 600, ("exposures", 0): 30}
    watch = reader.read("watch", columns=["topic", "offset"])
    assert set(watch["topic"].to_pylist()) == {"movielog"}
    assert watch.num_rows == EventStoreReader(tmp_path).counts()["watch"]

    # Compaction merges old and new files and writes the topic into every row.
    store.compact(min_files=2)
    merged = pq.read_table(store.files("watch")[0])
    assert merged.num_rows == watch.num_rows and merged["topic"].null_count == 0
    assert sorted(format_line(e) for _, _, e in EventStoreReader(tmp_path).iter_events()) == sorted(
        stream + exposure_lines(30, seed=9)
    )
    store.close()


def test_topics_setting_default_list_and_deprecated_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"kafka_bootstrap_servers": "k:9092", "store_path": "/tmp/s"}
    monkeypatch.delenv("MARQUEE_INGEST_TOPIC", raising=False)
    monkeypatch.delenv("MARQUEE_INGEST_TOPICS", raising=False)
    s = IngestSettings(**base)
    assert s.topics == ("movielog", "exposures") and s.primary_topic == "movielog"
    monkeypatch.setenv("MARQUEE_INGEST_TOPICS", " movielog, exposures,extra ")
    assert IngestSettings(**base).topics == ("movielog", "exposures", "extra")
    monkeypatch.delenv("MARQUEE_INGEST_TOPICS")
    monkeypatch.setenv("MARQUEE_INGEST_TOPIC", "exposures")  # an old single-topic deployment
    assert IngestSettings(**base).topics == ("exposures",)
    monkeypatch.setenv("MARQUEE_INGEST_TOPICS", "movielog")
    with pytest.raises(ValidationError, match="not both"):
        IngestSettings(**base)
    monkeypatch.delenv("MARQUEE_INGEST_TOPIC")
    for bad, why in [("a,a", "twice"), (" , ", "at least one"), ("movielog-dlq", "dead-letter")]:
        monkeypatch.setenv("MARQUEE_INGEST_TOPICS", bad)
        with pytest.raises(ValidationError, match=why):
            IngestSettings(**base)
