"""Online evaluation: exposures joined with watches, exactly once, restart-safe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.monitor.evaluation import EvaluationState, Evaluator
from services.monitor.sources import LinesSource
from tests.monitor.helpers import MIN, T0, S, exposure, rate, watch, write_lines


def _user(ev: Evaluator, uid: int) -> dict[str, int]:
    u = ev.state.users
    i = int(np.searchsorted(u["user_id"], uid))
    assert u["user_id"][i] == uid
    return {k: int(v[i]) for k, v in u.items()}


def _events() -> list:
    return [
        # user 1 (control): success 5 min after the list, then a miss, then a late watch.
        watch(T0 - 60 * MIN, 1, "zeta+1990"),  # pre-experiment minute (CUPED covariate)
        exposure(T0, 1, "control"),
        watch(T0 + 5 * MIN, 1, "alpha+1999"),
        exposure(T0 + 30 * MIN, 1, "control"),
        watch(T0 + 46 * MIN, 1, "beta+2001"),  # 16 minutes later: outside the window
        rate(T0 + 50 * MIN, 1, "alpha+1999", 5),
        # user 2 (treatment): a watch at the very instant of the list does not count.
        exposure(T0, 2, "treatment"),
        watch(T0, 2, "alpha+1999"),
        watch(T0 + 15 * MIN, 2, "beta+2001"),  # exactly the window's end: counts
        # user 3: first treatment, then the config moved them to control: first arm wins.
        exposure(T0 + MIN, 3, "treatment", fallback="timeout", latency=700),
        exposure(T0 + 2 * MIN, 3, "control"),
        # user 4: an error answer, then a pending list near the end.
        exposure(T0 + MIN, 4, "treatment", status=503),
        exposure(T0 + 100 * MIN, 4, "treatment"),
        # outside the experiment
        exposure(T0, 5, "unexposed"),
        exposure(T0, 6, "control", experiment="other"),
        watch(T0 + 110 * MIN, 9, "quiz+2000"),  # moves the end of the data
    ]


def test_counts_per_user_follow_the_contract(tmp_path: Path) -> None:
    src = LinesSource([write_lines(tmp_path / "s.log", _events())])
    ev = Evaluator(src.read, "exp-1")
    assert ev.advance(src.end_ns())
    st = ev.state
    assert st.arms == ["control", "treatment"]
    u1 = _user(ev, 1)
    assert (u1["arm"], u1["exposures"], u1["lists"], u1["successes"]) == (0, 2, 2, 1)
    assert (u1["pre_minutes"], u1["watch_minutes"], u1["ratings"], u1["rating_sum"]) == (1, 2, 1, 5)
    u2 = _user(ev, 2)
    assert (u2["arm"], u2["successes"], u2["watch_minutes"]) == (1, 1, 1)
    u3 = _user(ev, 3)
    assert (u3["arm"], u3["exposures"], u3["excluded"], u3["fallbacks"]) == (1, 1, 1, 1)
    u4 = _user(ev, 4)
    assert (u4["errors"], u4["lists"]) == (1, 0)
    assert ev.pending == 1  # user 4's last list: its window is still open
    assert (st.unexposed, st.other_experiments) == (1, 1)
    assert st.requests["treatment"].requests == 3
    assert st.requests["treatment"].p99_ms() == 700


def test_an_early_success_of_an_open_window_is_not_counted_yet(tmp_path: Path) -> None:
    events = [exposure(T0, 1, "control"), watch(T0 + MIN, 1, "alpha+1999")]
    src = LinesSource([write_lines(tmp_path / "s.log", events)])
    ev = Evaluator(src.read, "exp-1")
    ev.advance(T0 + 10 * MIN)
    assert ev.state.n_users == 0 and ev.pending == 1
    ev.advance(T0 + 16 * MIN)
    assert _user(ev, 1)["successes"] == 1 and ev.pending == 0


def _random_events(seed: int, users: int = 300) -> list:
    rng = np.random.default_rng(seed)
    events: list = []
    for uid in range(1, users + 1):
        arm = "control" if uid % 2 else "treatment"
        for _ in range(int(rng.integers(1, 5))):
            t = T0 + int(rng.integers(0, 600)) * MIN + int(rng.integers(0, 1000)) * 1_000_000
            other = rng.random() < 0.03
            events.append(
                exposure(
                    t,
                    uid,
                    ("treatment" if arm == "control" else "control") if other else arm,
                    latency=int(rng.integers(1, 300)),
                )
            )
            if rng.random() < 0.4:
                events.append(
                    watch(
                        t + int(rng.integers(1, 20 * 60)) * S,
                        uid,
                        "alpha+1999" if rng.random() < 0.5 else "zed+2003",
                    )
                )
        events.append(watch(T0 - int(rng.integers(1, 600)) * MIN, uid))
    return events


@pytest.mark.parametrize("seed", [1, 2])
def test_a_restart_mid_stream_equals_one_uninterrupted_run(tmp_path: Path, seed: int) -> None:
    src = LinesSource([write_lines(tmp_path / "s.log", _random_events(seed))])
    end = src.end_ns()
    whole = Evaluator(src.read, "exp-1")
    whole.advance(end)
    ckpt = tmp_path / "state.parquet"
    step = Evaluator(src.read, "exp-1")
    rng = np.random.default_rng(seed)
    t = T0
    while t < end:
        t = min(end, t + int(rng.integers(1, 90)) * MIN)
        step.advance(t)
        step.state.save(ckpt)
        # every step restarts from the checkpoint: nothing lost, nothing counted twice
        step = Evaluator(src.read, "exp-1", state=EvaluationState.load(ckpt))
    assert step.state.equals(whole.state)
    assert whole.state.n_users > 250 and int(whole.state.users["successes"].sum()) > 20


def test_interleaved_lists_credit_the_arm_that_contributed_the_watched_item(
    tmp_path: Path,
) -> None:
    events = [
        exposure(
            T0, 1, "interleave", ("alpha+1999", "beta+2001"), item_arms=("control", "treatment")
        ),
        watch(T0 + MIN, 1, "beta+2001"),
        exposure(
            T0, 2, "interleave", ("alpha+1999", "beta+2001"), item_arms=("control", "treatment")
        ),
        watch(T0 + MIN, 2, "alpha+1999"),
        watch(T0 + 2 * MIN, 2, "beta+2001"),
        watch(T0 + 60 * MIN, 9, "quiz+2000"),
    ]
    src = LinesSource([write_lines(tmp_path / "s.log", events)])
    ev = Evaluator(src.read, "exp-1")
    ev.advance(src.end_ns())
    assert (_user(ev, 1)["credit:control"], _user(ev, 1)["credit:treatment"]) == (0, 1)
    assert (_user(ev, 2)["credit:control"], _user(ev, 2)["credit:treatment"]) == (1, 1)


def test_a_real_event_store_gives_the_same_counts_as_the_lines(tmp_path: Path) -> None:
    from services.common.events import ExposureEvent, WatchEvent
    from services.ingest.store import EventStore
    from services.monitor.sources import StoreSource, exposure_table
    from tests.monitor.storeutil import store_table

    events = _random_events(3, users=120)
    lines = LinesSource([write_lines(tmp_path / "s.log", events)])
    store = EventStore(tmp_path / "store", writer=True)
    ordered = sorted(events, key=lambda e: e.time_ns)
    offset = 0
    for part in (ordered[: len(ordered) // 2], ordered[len(ordered) // 2 :]):
        ex = exposure_table([e for e in part if isinstance(e, ExposureEvent)])
        ws = [e for e in part if isinstance(e, WatchEvent)]
        tables = {
            "exposure": store_table("exposure", ex.to_pydict(), offset, topic="exposures"),
            "watch": store_table(
                "watch",
                {
                    "time_ns": [e.time_ns for e in ws],
                    "user_id": [e.user_id for e in ws],
                    "movie_id": [e.movie_id for e in ws],
                    "minute": [e.minute for e in ws],
                },
                offset,
            ),
        }
        offset += len(part)
        store.commit(
            tables,
            {("movielog", 0): (offset - len(part), offset - 1)},
            {("movielog", 0): part[-1].time_ns},
        )
    store.close()
    src = StoreSource([tmp_path / "store", tmp_path / "store"])  # one store named twice
    assert len(src.readers) == 1
    end = src.complete_until(0)
    assert end == ordered[-1].time_ns
    from_store = Evaluator(src.read, "exp-1")
    from_store.advance(end)
    from_lines = Evaluator(lines.read, "exp-1")
    from_lines.advance(end)
    assert from_store.state.equals(from_lines.state) and from_store.state.n_users > 100
