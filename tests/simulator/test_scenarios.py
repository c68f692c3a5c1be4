"""Scenario injection: every malformation rejected, rates as configured, all labelled."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.events import RateEvent, Rejected, WatchEvent, parse
from services.simulator.engine import TruthWriter
from services.simulator.scenarios import MALFORMED_KINDS, Scenario, malform
from services.simulator.sinks import MemorySink
from tests.simulator.helpers import SMALL, run_lines

VALID = [
    "2026-03-02T14:21:02,83916,GET /data/m/the+lost+harbor+1987/17.mpg",
    "2026-03-02T14:21:06,224612,GET /rate/night+of+glass+2004=4",
    "2026-03-02T10:30:03,99999,GET /create_account",
    "2026-03-02T01:33:45.122692921,227244,recommendation request marquee-router:8082, "
    "status 200, result: the+lost+harbor+1987, night+of+glass+2004, 25 ms",
    "2026-03-02T02:00:01.099,215124,recommendation request marquee-router:8082, status 0, "
    "result: java.net.ConnectException: Connection refused, 1 ms",
]


@pytest.mark.parametrize("kind", MALFORMED_KINDS)
@pytest.mark.parametrize("line", VALID)
def test_every_malformation_is_rejected(kind: str, line: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        assert isinstance(parse(malform(line, kind, rng)), Rejected)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(MALFORMED_KINDS),
    user=st.integers(1, 10**9),
    minute=st.integers(0, 300),
    seed=st.integers(0, 2**32 - 1),
)
def test_malformations_are_rejected_for_any_line(
    kind: str, user: int, minute: int, seed: int
) -> None:
    line = f"2026-03-02T14:21:02,{user},GET /data/m/cheech++chong+1985/{minute}.mpg"
    assert isinstance(parse(malform(line, kind, np.random.default_rng(seed))), Rejected)


@pytest.fixture(scope="module")
def dirty(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[dict], object]:
    from services.simulator.engine import NS, Engine, EngineConfig
    from services.simulator.recommenders import make_recommender
    from services.simulator.world import World

    sc = Scenario(
        malformed_rate=0.02,
        duplicate_rate=0.01,
        late_rate=0.01,
        cold_start_at_hours=1.0,
        cold_start_users=300,
        cold_start_window_s=1800,
        spam_at_hours=2.0,
        spam_accounts=40,
        spam_window_s=1800,
    )
    world = World.build(SMALL)
    engine = Engine(
        world, EngineConfig(seed=3, scenario=sc), make_recommender("builtin:popularity", world)
    )
    run_dir = tmp_path_factory.mktemp("dirty")
    truth = TruthWriter(run_dir, world, save_model=False)
    sink = MemorySink()
    for batch in engine.run(until_ns=engine.cfg.start_ns + 4 * 3600 * NS):
        sink.write(batch.lines, batch.users)
        truth.record(batch)
    truth.close(engine)
    labels = [
        json.loads(x) for x in (run_dir / "truth" / "injected.jsonl").read_text().splitlines()
    ]
    return sink.lines, labels, engine


def test_labels_point_at_the_injected_lines(dirty: tuple[list[str], list[dict], object]) -> None:
    lines, labels, _ = dirty
    assert labels
    for rec in labels:
        assert lines[rec["index"]] == rec["line"]
        if rec["kind"].startswith("malformed:"):
            assert isinstance(parse(rec["line"]), Rejected)
        elif rec["kind"] == "duplicate":
            assert lines[rec["index"] - 1] == rec["line"]
    bad = {i for i, x in enumerate(lines) if isinstance(parse(x), Rejected)}
    assert bad == {r["index"] for r in labels if r["kind"].startswith("malformed:")}


def test_injection_rates_are_as_configured(dirty: tuple[list[str], list[dict], object]) -> None:
    lines, labels, _ = dirty
    kinds = collections.Counter(r["kind"].split(":")[0] for r in labels)
    clean = len(lines) - kinds["malformed"] - kinds["duplicate"]
    for kind, rate in (("malformed", 0.02), ("duplicate", 0.01), ("late", 0.01)):
        expected = rate * clean
        assert abs(kinds[kind] - expected) < 5 * np.sqrt(expected), (kind, kinds[kind], expected)
    every = {r["kind"] for r in labels if r["kind"].startswith("malformed:")}
    assert every == {f"malformed:{k}" for k in MALFORMED_KINDS}


def test_late_events_arrive_out_of_order(dirty: tuple[list[str], list[dict], object]) -> None:
    lines, labels, _ = dirty
    late = [r for r in labels if r["kind"] == "late"]
    ev = [parse(lines[r["index"] - 1]) for r in late]
    me = [parse(r["line"]) for r in late]
    earlier = sum(
        1
        for a, b in zip(ev, me, strict=True)
        if not isinstance(a, Rejected) and b.time_ns < a.time_ns  # type: ignore[union-attr]
    )
    assert earlier >= 0.9 * len(late)


def test_cold_start_and_spam_ring(dirty: tuple[list[str], list[dict], object]) -> None:
    lines, labels, engine = dirty
    kinds = collections.Counter(r["kind"] for r in labels)
    assert kinds["cold_start"] == 300  # one create_account line per burst user
    assert kinds["rating_spam"] == 80  # a create_account and a 5-star rating per account
    summary = engine.summary()  # type: ignore[attr-defined]
    target = summary["spam_movie"]
    spam = {r["line"] for r in labels if r["kind"] == "rating_spam" and "/rate/" in r["line"]}
    assert all(f"/rate/{target}=5" in x for x in spam)
    spam_users = set(summary["spam_users"])
    fives = [e for e in map(parse, lines) if isinstance(e, RateEvent) and e.movie_id == target]
    assert len({e.user_id for e in fives} & spam_users) == 40  # (duplicates may repeat one)


def test_feedback_loop_concentrates_watching() -> None:
    def top_share(loop: float) -> float:
        lines, _ = run_lines(hours=8, scenario=Scenario(feedback_loop=loop), reco_share=0.0)
        c = collections.Counter(e.movie_id for e in map(parse, lines) if isinstance(e, WatchEvent))
        total = sum(c.values())
        return sum(v for _, v in c.most_common(20)) / total

    assert top_share(20.0) > 1.2 * top_share(0.0)


def test_scenario_files_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "s.yaml"
    y.write_text("malformed_rate: 0.05\nmalformed_kinds: [truncated, rating_6]\nspam_at_hours: 3\n")
    sc = Scenario.load(y)
    assert sc.malformed_rate == 0.05 and sc.malformed_kinds == ["truncated", "rating_6"]
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"duplicate_rate": 0.1}))
    assert Scenario.load(j).duplicate_rate == 0.1
    assert Scenario().malformed_rate == 0 and Scenario().spam_at_hours is None  # all off
    with pytest.raises(ValueError, match="unknown scenario keys"):
        Scenario.from_mapping({"malformd_rate": 0.1})
    with pytest.raises(ValueError, match="unknown malformed kinds"):
        Scenario(malformed_kinds=["nonsense"])
