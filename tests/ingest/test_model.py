"""Model-based: any mix of deliveries, rewinds, flushes and crashes stores each line once."""

from __future__ import annotations

import shutil
import tempfile
from collections import namedtuple
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ingest.core import Ingestor
from services.ingest.store import EventStore
from tests.ingest.streamgen import MALFORMED, lines
from tests.ingest.verify import assert_exactly_once

Rec = namedtuple("Rec", "offset value timestamp")
PARTITIONS = 3
VALUES = {
    p: [v.encode() for v in lines(400, seed=p)] + [m for m, _ in MALFORMED[:10]]
    for p in range(PARTITIONS)
}

step = st.tuples(
    st.integers(0, PARTITIONS - 1),
    st.integers(1, 150),
    st.sampled_from(["deliver", "flush", "crash", "rewind", "torn_commit"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=25))
def test_any_interleaving_stores_every_record_exactly_once(
    steps: list[tuple[int, int, str]],
) -> None:
    root = Path(tempfile.mkdtemp(prefix="ingest-model-"))
    ing = Ingestor(EventStore(root, writer=True))
    pos = dict.fromkeys(range(PARTITIONS), 0)  # the consumer's fetch position per partition

    def deliver(p: int, n: int) -> None:
        recs = [
            Rec(o, VALUES[p][o], 1_772_409_600_000)
            for o in range(pos[p], min(pos[p] + n, len(VALUES[p])))
        ]
        ing.add(p, recs)
        pos[p] += len(recs)

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
            pos = {q: ing.next_offset(q) or 0 for q in range(PARTITIONS)}
    for p in range(PARTITIONS):
        deliver(p, len(VALUES[p]))
    ing.flush()
    ing.store.close()
    topic = [(p, o, v, {}) for p, vs in VALUES.items() for o, v in enumerate(vs)]
    try:
        assert_exactly_once(root, topic)
    finally:
        shutil.rmtree(root)
