"""Model-based: any mix of deliveries, rewinds, flushes and crashes stores each line once.

Two topics share the store, with the same partition numbers and overlapping offsets, as the
stream and the router's exposures do: positions are per (topic, partition).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import namedtuple
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.core import Ingestor
from services.ingest.store import EventStore
from tests.ingest.streamgen import MALFORMED, exposure_lines, lines
from tests.ingest.verify import assert_exactly_once

Rec = namedtuple("Rec", "offset value timestamp")
PARTITIONS = 3
TOPICS = ("movielog", "exposures")
STREAMS = [(t, p) for t in TOPICS for p in range(PARTITIONS)]
VALUES = {
    ("movielog", p): [v.encode() for v in lines(400, seed=p)] + [m for m, _ in MALFORMED[:10]]
    for p in range(PARTITIONS)
} | {
    ("exposures", p): [v.encode() for v in exposure_lines(150, seed=p)]
    + [m for m, _ in MALFORMED[10:14]]
    for p in range(PARTITIONS)
}

step = st.tuples(
    st.sampled_from(STREAMS),
    st.integers(1, 150),
    st.sampled_from(["deliver", "flush", "crash", "rewind", "torn_commit"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=25))
def test_any_interleaving_stores_every_record_exactly_once(
    steps: list[tuple[tuple[str, int], int, str]],
) -> None:
    root = Path(tempfile.mkdtemp(prefix="ingest-model-"))
    ing = Ingestor(EventStore(root, writer=True))
    pos = dict.fromkeys(STREAMS, 0)  # the consumer's fetch position per (topic, partition)

    def deliver(tp: tuple[str, int], n: int) -> None:
        recs = [
            Rec(o, VALUES[tp][o], 1_772_409_600_000)
            for o in range(pos[tp], min(pos[tp] + n, len(VALUES[tp])))
        ]
        ing.add(tp[1], recs, tp[0])
        pos[tp] += len(recs)

    for p, n, action in steps:
        deliver(p, n)
        if action == "flush":
            ing.flush()
        elif action == "rewind":  # a rebalance or broker restart re-delivers what was fetched
            pos[p] = max(0, pos[p] - n)
        elif action in ("crash", "torn_commit"):
            if action == "torn_commit":  # files written, manifest never landed
                commit = ing.flush()
                if commit is not None:
                    (root / "_commits" / f"c{commit.commit_id:010d}.json").unlink()
            ing.store.close()
            ing = Ingestor(EventStore(root, writer=True))
            pos = {q: ing.next_offset(q[1], q[0]) or 0 for q in STREAMS}
    for tp in STREAMS:
        deliver(tp, len(VALUES[tp]))
    ing.flush()
    ing.store.close()
    topics: dict[str, list] = {t: [] for t in TOPICS}
    for (t, p), vs in VALUES.items():
        topics[t] += [(p, o, v, {}) for o, v in enumerate(vs)]
    try:
        got = assert_exactly_once(root, topics)
        assert set(got["per_topic"]) == set(TOPICS)
    finally:
        shutil.rmtree(root)
