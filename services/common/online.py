"""Online success, defined once: the 15-minute watch rate of served lists, over Arrow tables.

The definition (``docs/contract.md``, "Online success"):

- A *served list* is a recommendation line or an exposure with status 200 and at least one
  movie id.  Errors and empty answers are not lists; they count against availability, not here.
- A served list at time ``t`` to user ``u`` *succeeds* when ``u`` has a watch event of any
  listed movie with ``t < watch time <= t + 15 min`` (strictly after it, up to and including the
  window's end).  Every list is judged on its own: one watch may credit several lists.
- A list is *decided* when its whole window lies before ``until_ns`` (``t + 15 min < until_ns``),
  the time up to which the watch data is complete (exclusive, like the store's reads; by default
  one past the latest served list or watch).  Lists still open are *pending*: excluded from the
  rate, whether or not a watch already came, so the rate is not biased towards early successes,
  and counted so nobody mistakes them for failures.
- The *rate* is successes / decided lists; the *per-user rate* is each user's own rate over their
  decided lists, and its mean over users weighs every user once, however often they ask.

Vectorized with numpy (sorts and ``searchsorted``): the monitor runs it over millions of rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "WINDOW_NS",
    "UserWatchRates",
    "WatchRate",
    "outcomes",
    "per_user",
    "served_lists",
    "summarize",
    "user_watch_rate",
    "watch_rate",
]

WINDOW_NS: Final = 15 * 60 * 1_000_000_000
"""The success window after a served list: 15 minutes."""
_LIST_COLUMNS: Final = ("result", "items")


@dataclass(frozen=True)
class WatchRate:
    """Successes out of decided served lists, plus the lists whose window was still open."""

    successes: int
    trials: int
    pending: int = 0

    @property
    def rate(self) -> float:
        """Share of decided lists followed by a watch of a listed movie within the window."""
        return self.successes / self.trials if self.trials else 0.0


@dataclass(frozen=True)
class UserWatchRates:
    """Per user: decided lists, successes and own rate (``table``); the mean over users."""

    table: pa.Table
    pending: int

    @property
    def users(self) -> int:
        """Users with at least one decided list."""
        return int(self.table.num_rows)

    @property
    def mean(self) -> float:
        """Mean of the users' own rates (0.0 when no user has a decided list)."""
        if not self.table.num_rows:
            return 0.0
        return float(np.mean(self.table["rate"].to_numpy()))


def _list_column(table: pa.Table) -> str:
    for name in _LIST_COLUMNS:
        if name in table.column_names:
            return name
    raise ValueError(f"a table of served lists needs one of the columns {list(_LIST_COLUMNS)}")


def served_lists(table: pa.Table) -> pa.Table:
    """The rows of ``table`` that are served lists: status 200 and a non-empty list.

    ``table`` holds recommendation events (list column ``result``, as the store and
    ``derived.recommendations`` have it) or exposures (``items``); other columns pass through.
    """
    column = _list_column(table)
    keep = pc.and_(
        pc.equal(table["status"], 200),
        pc.greater(pc.fill_null(pc.list_value_length(table[column]), 0), 0),
    )
    return table.filter(pc.fill_null(keep, False))


def _dense(values: pa.Array | pa.ChunkedArray) -> tuple[npt.NDArray[np.int64], pa.Array]:
    """Dense codes of ``values`` and the distinct values they index (hashing, not sorting)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    encoded = pc.dictionary_encode(values)
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary


def _lookup(values: pa.Array, distinct: pa.Array) -> npt.NDArray[np.int64]:
    """The index of every value in ``distinct``, -1 where it is not there."""
    found = pc.fill_null(pc.index_in(values, value_set=distinct), -1)
    codes: npt.NDArray[np.int64] = found.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes


def _any_watched(
    served: pa.Table, column: str, t0: npt.NDArray[np.int64], watches: pa.Table, window_ns: int
) -> npt.NDArray[np.bool_]:
    """Per served list: did its user watch a listed movie in ``(t0, t0 + window_ns]``?

    Only (user, movie) keys some watch has can succeed, so pairs are looked up in the watches'
    keys by hashing and dropped early; the sorts and binary searches then run over the watches
    and the few pairs that remain.
    """
    n = len(t0)
    lists_col = served[column].combine_chunks()
    parent = pc.list_parent_indices(lists_col).to_numpy().astype(np.int64)
    w_time = watches["time_ns"].to_numpy().astype(np.int64)
    w_user, users = _dense(watches["user_id"].cast(pa.int64()))
    w_movie, movies = _dense(watches["movie_id"].cast(pa.string()))
    list_user = _lookup(served["user_id"].combine_chunks().cast(pa.int64()), users)
    pair_movie = _lookup(pc.list_flatten(lists_col).cast(pa.string()), movies)
    pair_user = list_user[parent]
    keep = (pair_movie >= 0) & (pair_user >= 0)
    parent, pair_movie, pair_user = parent[keep], pair_movie[keep], pair_user[keep]
    # A (user, movie) key; both codes are below the watch count, so it fits an int64.
    n_movies = len(movies)
    w_key, keys = _dense(pa.array(w_user * n_movies + w_movie))
    pos = _lookup(pa.array(pair_user * n_movies + pair_movie), keys)
    keep = pos >= 0
    parent, pos = parent[keep], pos[keep]
    # Time as a rank among the watches' distinct times: watch ranks start at 1, and a list's
    # rank is how many distinct watch times are <= its time, so "rank above" means "strictly
    # after".  (key, rank) then packs into one sortable int64 (both are below the watch count).
    sorted_times = np.sort(w_time)
    times = sorted_times[np.concatenate(([True], sorted_times[1:] != sorted_times[:-1]))]
    span = len(times) + 1
    w_packed = w_key * span + np.searchsorted(times, w_time) + 1
    order = np.argsort(w_packed)
    w_sorted = w_packed[order]
    w_time_sorted = w_time[order]
    list_rank = np.searchsorted(times, t0, side="right")
    # The first watch after the list with the same key, if any; it must fall in the window.
    j = np.searchsorted(w_sorted, pos * span + list_rank[parent], side="right")
    jj = np.minimum(j, len(w_sorted) - 1)
    hit = (
        (j < len(w_sorted))
        & (w_sorted[jj] // span == pos)
        & (w_time_sorted[jj] <= t0[parent] + window_ns)
    )
    found: npt.NDArray[np.bool_] = np.bincount(parent[hit], minlength=n) > 0
    return found


def outcomes(
    lists: pa.Table,
    watches: pa.Table,
    *,
    window_ns: int = WINDOW_NS,
    until_ns: int | None = None,
) -> pa.Table:
    """The served lists of ``lists`` with two columns added: ``decided`` and ``success``.

    ``watches`` needs ``user_id``, ``movie_id`` and ``time_ns`` (store rows of kind watch).
    ``success`` is null for pending lists.  Row order of the served lists is kept.
    """
    served = served_lists(lists)
    column = _list_column(served)
    n = served.num_rows
    t0 = served["time_ns"].to_numpy().astype(np.int64)
    if until_ns is None:
        ends = [int(t0.max()) if n else None]
        if watches.num_rows:
            ends.append(int(pc.max(watches["time_ns"]).as_py()))
        known = [e for e in ends if e is not None]
        until_ns = max(known) + 1 if known else 0
    decided = t0 + window_ns < until_ns
    success = np.zeros(n, dtype=bool)
    if n and watches.num_rows:
        success = _any_watched(served, column, t0, watches, window_ns)
    success_col = pa.array(success, pa.bool_(), mask=~decided)
    return served.append_column("decided", pa.array(decided, pa.bool_())).append_column(
        "success", success_col
    )


def summarize(judged: pa.Table) -> WatchRate:
    """The watch rate of a table from ``outcomes`` (or a filtered part of it, e.g. one arm)."""
    decided = judged["decided"].to_numpy(zero_copy_only=False).astype(bool)
    success = pc.fill_null(judged["success"], False).to_numpy(zero_copy_only=False).astype(bool)
    return WatchRate(int(success.sum()), int(decided.sum()), int((~decided).sum()))


def per_user(judged: pa.Table) -> UserWatchRates:
    """Per-user watch rates of a table from ``outcomes``, users sorted by id."""
    decided = judged["decided"].to_numpy(zero_copy_only=False).astype(bool)
    success = pc.fill_null(judged["success"], False).to_numpy(zero_copy_only=False).astype(bool)
    user = judged["user_id"].to_numpy()[decided]
    ids, inverse = np.unique(user, return_inverse=True)
    lists = np.bincount(inverse, minlength=len(ids))
    hits = np.bincount(inverse, weights=success[decided], minlength=len(ids)).astype(np.int64)
    table = pa.table(
        {
            "user_id": pa.array(ids, pa.int64()),
            "lists": pa.array(lists, pa.int64()),
            "successes": pa.array(hits, pa.int64()),
            "rate": pa.array(hits / np.maximum(lists, 1), pa.float64()),
        }
    )
    return UserWatchRates(table, int((~decided).sum()))


def watch_rate(
    lists: pa.Table,
    watches: pa.Table,
    *,
    window_ns: int = WINDOW_NS,
    until_ns: int | None = None,
) -> WatchRate:
    """The watch rate of the served lists in ``lists`` (see the module's definition)."""
    return summarize(outcomes(lists, watches, window_ns=window_ns, until_ns=until_ns))


def user_watch_rate(
    lists: pa.Table,
    watches: pa.Table,
    *,
    window_ns: int = WINDOW_NS,
    until_ns: int | None = None,
) -> UserWatchRates:
    """Per-user watch rates of the served lists in ``lists`` and their mean over users."""
    return per_user(outcomes(lists, watches, window_ns=window_ns, until_ns=until_ns))
