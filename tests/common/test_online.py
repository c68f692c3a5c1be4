"""Online success: the vectorized watch rate against a brute-force reading of the definition."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.online import (
    WINDOW_NS,
    WatchRate,
    outcomes,
    served_lists,
    summarize,
    user_watch_rate,
    watch_rate,
)
from services.common.store import SCHEMAS

S = 1_000_000_000
MOVIES = ["a+1999", "b+2000", "c+2001", "d+"]


def recos(rows: list[tuple[int, int, int, list[str]]]) -> pa.Table:
    """Recommendation rows (time_ns, user_id, status, result) in the store's schema."""
    schema = SCHEMAS["recommendation"]
    return pa.table(
        {
            "topic": pa.array(["movielog"] * len(rows)).dictionary_encode(),
            "partition": pa.array([0] * len(rows), pa.int32()),
            "offset": pa.array(range(len(rows)), pa.int64()),
            "time_ns": pa.array([r[0] for r in rows], pa.int64()),
            "time_digits": pa.array([0] * len(rows), pa.int8()),
            "user_id": pa.array([r[1] for r in rows], pa.int64()),
            "host": pa.array(["h:1"] * len(rows)),
            "status": pa.array([r[2] for r in rows], pa.int16()),
            "result": pa.array([r[3] for r in rows], pa.list_(pa.string())),
            "error": pa.array([None] * len(rows), pa.string()),
            "response_time_ms": pa.array([5] * len(rows), pa.int32()),
        },
        schema=schema,
    )


def exposures(rows: list[tuple[int, int, int, list[str]]]) -> pa.Table:
    """Exposure rows with the same content, in the store's exposure schema."""
    n = len(rows)
    return pa.table(
        {
            "topic": pa.array(["exposures"] * n).dictionary_encode(),
            "partition": pa.array([0] * n, pa.int32()),
            "offset": pa.array(range(n), pa.int64()),
            "time_ns": pa.array([r[0] for r in rows], pa.int64()),
            "time_digits": pa.array([0] * n, pa.int8()),
            "user_id": pa.array([r[1] for r in rows], pa.int64()),
            "experiment": pa.array(["e"] * n),
            "arm": pa.array([f"arm{i % 2}" for i in range(n)]),
            "model_name": pa.array(["svd"] * n),
            "model_version": pa.array(["v1"] * n),
            "status": pa.array([r[2] for r in rows], pa.int16()),
            "latency_ms": pa.array([5] * n, pa.int32()),
            "fallback": pa.array([None] * n, pa.string()),
            "items": pa.array([r[3] for r in rows], pa.list_(pa.string())),
            "item_arms": pa.array([None] * n, pa.list_(pa.string())),
        },
        schema=SCHEMAS["exposure"],
    )


def watches(rows: list[tuple[int, int, str]]) -> pa.Table:
    """Watch rows (time_ns, user_id, movie_id)."""
    return pa.table(
        {
            "time_ns": pa.array([r[0] for r in rows], pa.int64()),
            "user_id": pa.array([r[1] for r in rows], pa.int64()),
            "movie_id": pa.array([r[2] for r in rows], pa.string()),
        }
    )


def chunked(table: pa.Table, at: int) -> pa.Table:
    """The same rows in two chunks (store reads of several files come chunked)."""
    return pa.concat_tables([table.slice(0, at), table.slice(at)])


def reference(
    lists: list[tuple[int, int, int, list[str]]],
    seen: list[tuple[int, int, str]],
    window: int,
    until: int | None,
) -> list[tuple[int, bool, bool]]:
    """(user, decided, success) per served list, straight from the contract's words."""
    served = [r for r in lists if r[2] == 200 and r[3]]
    if until is None:
        times = [r[0] for r in served] + [w[0] for w in seen]
        until = max(times) + 1 if times else 0
    out = []
    for t0, user, _, listed in served:
        success = any(u == user and m in listed and t0 < t <= t0 + window for t, u, m in seen)
        out.append((user, t0 + window < until, success))
    return out


def test_counts_listed_movies_strictly_after_and_up_to_the_window_end() -> None:
    t0 = 1_000 * S
    lists = [
        (t0, 1, 200, ["a+1999", "b+2000"]),  # b watched 15 min later exactly: success
        (t0, 2, 200, ["a+1999"]),  # watched at the same instant only: not after it
        (t0, 3, 200, ["a+1999"]),  # watched one ns after the window: failure
        (t0, 4, 200, ["a+1999"]),  # another movie watched: failure
        (t0, 5, 0, []),  # an error is not a list
        (t0, 6, 200, []),  # nor is an empty answer
        (t0, 7, 200, ["c+2001"]),  # user 1 watched it, not user 7
    ]
    seen = [
        (t0 + WINDOW_NS, 1, "b+2000"),
        (t0, 2, "a+1999"),
        (t0 + WINDOW_NS + 1, 3, "a+1999"),
        (t0 + S, 4, "c+2001"),
        (t0 + S, 1, "c+2001"),
        (t0 + 2 * WINDOW_NS, 9, "d+"),  # data runs well past every window
    ]
    assert watch_rate(recos(lists), watches(seen)) == WatchRate(1, 5, 0)
    assert watch_rate(exposures(lists), watches(seen)) == WatchRate(1, 5, 0)


def test_open_windows_are_pending_not_failures() -> None:
    t0 = 1_000 * S
    lists = [(t0, 1, 200, ["a+1999"]), (t0 + 10 * 60 * S, 2, 200, ["a+1999"])]
    seen = [(t0 + 60 * S, 1, "a+1999"), (t0 + 11 * 60 * S, 2, "a+1999")]
    # The data ends at 11 min: both windows are open, even the one that already succeeded.
    assert watch_rate(recos(lists), watches(seen)) == WatchRate(0, 0, 2)
    assert watch_rate(recos(lists), watches(seen), until_ns=t0 + 16 * 60 * S) == WatchRate(1, 1, 1)
    assert watch_rate(recos(lists), watches(seen), until_ns=t0 + 26 * 60 * S) == WatchRate(2, 2, 0)
    judged = outcomes(recos(lists), watches(seen), until_ns=t0 + 16 * 60 * S)
    assert judged["decided"].to_pylist() == [True, False]
    assert judged["success"].to_pylist() == [True, None]


def test_per_user_rate_weighs_every_user_once() -> None:
    t0 = 1_000 * S
    lists = [(t0 + i * S, 1, 200, ["a+1999"]) for i in range(9)] + [(t0, 2, 200, ["b+2000"])]
    seen = [(t0 + 100 * S, 1, "a+1999"), (t0 + 3_600 * S, 3, "c+2001")]
    overall = watch_rate(recos(lists), watches(seen))
    users = user_watch_rate(recos(lists), watches(seen))
    assert overall == WatchRate(9, 10, 0)
    assert users.table.to_pylist() == [
        {"user_id": 1, "lists": 9, "successes": 9, "rate": 1.0},
        {"user_id": 2, "lists": 1, "successes": 0, "rate": 0.0},
    ]
    assert users.mean == 0.5 and users.users == 2 and users.pending == 0


def test_other_columns_pass_through_so_arms_can_be_compared() -> None:
    t0 = 1_000 * S
    lists = [(t0, 1, 200, ["a+1999"]), (t0, 2, 200, ["a+1999"]), (t0, 3, 503, [])]
    judged = outcomes(
        exposures(lists), watches([(t0 + S, 1, "a+1999"), (t0 + WINDOW_NS * 2, 9, "d+")])
    )
    assert judged["arm"].to_pylist() == ["arm0", "arm1"]
    arm0 = judged.filter(pa.compute.equal(judged["arm"], "arm0"))
    assert summarize(arm0) == WatchRate(1, 1, 0)


def test_no_lists_or_no_watches() -> None:
    assert watch_rate(recos([]), watches([])) == WatchRate(0, 0, 0)
    lists = [(0, 1, 200, ["a+1999"])]
    assert watch_rate(recos(lists), watches([]), until_ns=WINDOW_NS + 1) == WatchRate(0, 1, 0)
    assert user_watch_rate(recos([]), watches([])).mean == 0.0


def test_a_table_without_a_list_column_is_refused() -> None:
    with pytest.raises(ValueError, match="result"):
        served_lists(pa.table({"status": [200]}))


# Times on a coarse grid so that lists and watches often share an instant or sit exactly on a
# window's end: the edges of the definition are where a vectorized version goes wrong.
WINDOW = 4
_time = st.integers(0, 24)
_list = st.tuples(
    _time,
    st.integers(1, 4),
    st.sampled_from([200, 200, 200, 0, 500]),
    st.lists(st.sampled_from(MOVIES), max_size=3),
)
_watch = st.tuples(_time, st.integers(1, 4), st.sampled_from(MOVIES))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(_list, max_size=25),
    st.lists(_watch, max_size=40),
    st.one_of(st.none(), st.integers(0, 40)),
    st.booleans(),
    st.data(),
)
def test_matches_the_brute_force_reference(
    lists: list[tuple[int, int, int, list[str]]],
    seen: list[tuple[int, int, str]],
    until: int | None,
    as_exposures: bool,
    data: Any,
) -> None:
    table = exposures(lists) if as_exposures else recos(lists)
    w = watches(seen)
    table = chunked(table, data.draw(st.integers(0, len(lists))))
    w = chunked(w, data.draw(st.integers(0, len(seen))))
    expected = reference(lists, seen, WINDOW, until)
    judged = outcomes(table, w, window_ns=WINDOW, until_ns=until)
    got = list(
        zip(
            judged["user_id"].to_pylist(),
            judged["decided"].to_pylist(),
            judged["success"].to_pylist(),
            strict=True,
        )
    )
    assert [(u, d, s if d else None) for u, d, s in expected] == got
    decided = [e for e in expected if e[1]]
    rate = summarize(judged)
    assert rate == WatchRate(sum(e[2] for e in decided), len(decided), len(expected) - len(decided))
    users = user_watch_rate(table, w, window_ns=WINDOW, until_ns=until)
    per: dict[int, list[bool]] = {}
    for u, _, s in decided:
        per.setdefault(u, []).append(s)
    assert users.table["user_id"].to_pylist() == sorted(per)
    assert users.table["successes"].to_pylist() == [sum(per[u]) for u in sorted(per)]
    means = [sum(v) / len(v) for v in per.values()]
    assert users.mean == pytest.approx(sum(means) / len(means) if means else 0.0)
