"""Prepared data: the snapshot indexed into integer arrays and split in time, saved as Parquet.

Users and movies are indexed once (``user_ids`` sorted, ``item_ids`` the catalog), so every
model and the evaluation share one index space.  The split is temporal: events before the
validation cut-off train, the next period validates, the most recent period tests.  A
(user, movie) watch belongs to the period its first minute falls in, a rating to the period of
the pair's first rating; every quantity of a period is computed from its own events only
(minutes watched before its end, the latest rating before its end), and the refit's ``all``
period from everything.  The time order of every time column and the disjointness of the
periods are checked (``check_disjoint``), not assumed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from services.common.scoring import age_group
from services.common.snapshot import SnapshotError, read_snapshot
from services.trainer.util import unique_ints

PERIODS: Final = ("train", "val", "test")
STORED: Final = (*PERIODS, "all")  # ``all``: every event, what the refit trains on
META_COLUMNS: Final = ("vote_average", "vote_count", "popularity", "runtime")
"""The movie API's numbers a snapshot's ``movies`` table keeps (ingest's ``movies_table``)."""
TIME_COLUMNS: Final = ("inter_time", "inter_last", "rate_time")
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


class LeakageError(AssertionError):
    """A held-out event also appears in (or precedes the end of) the training period."""


@dataclass(frozen=True)
class Period:
    """The interactions and ratings of one time period, as index arrays.

    ``inter_time`` is a watch's first minute and ``inter_last`` the latest minute counted in
    ``inter_minutes``; ``rate_time`` is the time of the rating kept (the pair's latest in the
    period).  Every one of them lies inside the period.
    """

    inter_user: I32
    inter_item: I32
    inter_minutes: F32
    inter_time: I64
    inter_last: I64
    rate_user: I32
    rate_item: I32
    rate_value: F32
    rate_time: I64

    @classmethod
    def empty(cls) -> Period:
        """A period with no events."""
        i, f, t = np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return cls(i, i, f, t, t, i, i, f, t)

    def select(self, inter_mask: npt.NDArray[np.bool_], rate_mask: npt.NDArray[np.bool_]) -> Period:
        """The events where the masks are true."""
        return Period(
            self.inter_user[inter_mask],
            self.inter_item[inter_mask],
            self.inter_minutes[inter_mask],
            self.inter_time[inter_mask],
            self.inter_last[inter_mask],
            self.rate_user[rate_mask],
            self.rate_item[rate_mask],
            self.rate_value[rate_mask],
            self.rate_time[rate_mask],
        )

    def pairs(self, n_items: int) -> I64:
        """Sorted unique (user, item) keys of every watch or rating in the period."""
        keys = np.concatenate(
            [
                self.inter_user.astype(np.int64) * n_items + self.inter_item,
                self.rate_user.astype(np.int64) * n_items + self.rate_item,
            ]
        )
        out: I64 = unique_ints(keys)
        return out


@dataclass(frozen=True)
class Prepared:
    """Everything the models and the evaluation need, in one index space."""

    item_ids: npt.NDArray[np.str_]
    user_ids: I64
    gender: npt.NDArray[np.str_]
    age: npt.NDArray[np.int16]
    periods: dict[str, Period]
    info: dict[str, Any] = field(default_factory=dict)
    occupation: npt.NDArray[np.str_] | None = None
    """Each user's occupation ("" unknown), from the user API; None when the source has none."""
    item_year: npt.NDArray[np.int16] | None = None
    """Each movie's release year (0 unknown), from the movie API."""
    item_genres: npt.NDArray[np.uint8] | None = None
    """items × genres, 1 where the movie has the genre (columns: ``genre_names``)."""
    genre_names: npt.NDArray[np.str_] | None = None
    item_meta: npt.NDArray[np.float32] | None = None
    """items × ``META_COLUMNS`` from the movie API (NaN unknown); None when the source has none."""

    @property
    def n_users(self) -> int:
        """Users in the index space."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        """Movies in the catalog."""
        return len(self.item_ids)

    @property
    def train(self) -> Period:
        """The training period."""
        return self.periods["train"]

    def all_periods(self) -> Prepared:
        """Every event as ``train`` (the ``all`` period): for the model that serves."""
        merged = self.periods.get("all") or Period(
            *(
                np.concatenate([getattr(self.periods[p], f) for p in PERIODS])
                for f in Period.__dataclass_fields__
            )
        )
        empty = Period.empty()
        info = {**self.info, "fit_on": "all"}
        periods = {"train": merged, "val": empty, "test": empty, "all": merged}
        return replace(self, periods=periods, info=info)

    def with_validation_in_train(self) -> Prepared:
        """Train + validation as ``train``, test unchanged: the refit the test period scores.

        The periods share no pair, so the union is a concatenation; selection is done by then.
        """
        merged = Period(
            *(
                np.concatenate([getattr(self.periods[p], f) for p in ("train", "val")])
                for f in Period.__dataclass_fields__
            )
        )
        info = {**self.info, "fit_on": "train+val"}
        periods = {"train": merged, "val": Period.empty(), "test": self.periods["test"]}
        return replace(self, periods=periods, info=info)

    def segments(self) -> npt.NDArray[np.str_]:
        """``segment_key`` of every user (computed per distinct age, not per user)."""
        groups = self.age_groups()
        out: npt.NDArray[np.str_] = np.char.add(np.char.add(self.gender.astype("<U1"), "|"), groups)
        return out

    def segment_index(self) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.intp]]:
        """``np.unique(self.segments(), return_inverse=True)``, not sorting a string per user."""
        ages, age_of = np.unique(self.age, return_inverse=True)
        genders = np.array(["F", "M", "U"])
        gender_of = np.select([self.gender == "F", self.gender == "M"], [0, 1], 2)
        combo = gender_of * len(ages) + age_of.reshape(-1)
        present, combo_of = np.unique(combo, return_inverse=True)
        keys = np.array(
            [
                f"{genders[c // len(ages)]}|{age_group(int(a) if a >= 0 else None)}"
                for c, a in zip(present.tolist(), ages[present % len(ages)].tolist(), strict=True)
            ]
        )
        names, name_of = np.unique(keys, return_inverse=True)  # segments of ages share a key
        index: npt.NDArray[np.intp] = name_of.reshape(-1)[combo_of.reshape(-1)]
        return names, index

    def age_groups(self) -> npt.NDArray[np.str_]:
        """``age_group`` of every user."""
        ages, inverse = np.unique(self.age, return_inverse=True)
        names = np.array([age_group(int(a) if a >= 0 else None) for a in ages], dtype="<U16")
        out: npt.NDArray[np.str_] = names[inverse.reshape(-1)]
        return out

    def seen_matrix(self, period: str = "train") -> sp.csr_matrix:
        """users × items CSR with 1 where the user watched or rated the item in ``period``."""
        keys = self.periods[period].pairs(self.n_items)
        u, i = np.divmod(keys, self.n_items)
        data = np.ones(len(keys), np.float32)
        return sp.csr_matrix((data, (u, i)), shape=(self.n_users, self.n_items))


# --- building ------------------------------------------------------------------------------


def load_source(spec: str) -> tuple[dict[str, pa.Table], dict[str, Any]]:
    """Tables and provenance of a snapshot folder, or of ``movielens:<dir>`` (ML-100K)."""
    if spec.startswith("movielens:"):
        from services.trainer.movielens import load_tables

        return load_tables(spec.removeprefix("movielens:"))
    path = Path(spec)
    if not (path / "manifest.json").is_file():
        raise SnapshotError(
            f"no snapshot at {path!s}: produce one with ingest (make demo builds one from the "
            "simulator), or set data.snapshot in params.yaml to movielens:<ml-100k folder>"
        )
    snap = read_snapshot(path)
    m = snap.manifest
    tables = {
        "interactions": snap.interactions,
        "ratings": snap.ratings,
        "users": snap.users,
        "movies": snap.movies,
    }
    provenance = {
        "source": str(path),
        "content_hash": snap.content_hash,
        "time_range": m.get("time_range", {}),
        "until_ns": m.get("until_ns"),
        "row_counts": m.get("row_counts", {}),
        "watch_grain_ns": int(m.get("watch_grain_ns") or 1),
    }
    return tables, provenance


def _cut(times: I64, fraction: float) -> int:
    """The time from which the last ``fraction`` of events lie (exact on int64 nanoseconds)."""
    n = len(times)
    if n == 0 or fraction <= 0:
        return int(times.max()) + 1 if n else 0
    k = min(n - 1, max(0, int(np.floor(n * (1.0 - fraction)))))
    return int(np.partition(times, k)[k])


def _starts(key: I64) -> npt.NDArray[np.bool_]:
    """True at the first row of each run of equal keys."""
    out: npt.NDArray[np.bool_] = np.ones(len(key), bool)
    out[1:] = key[1:] != key[:-1]
    return out


@dataclass(frozen=True)
class _Events:
    """Time-stamped (user, item, value) rows, sorted by (user, item) pair, then by time."""

    user: I32
    item: I32
    time: I64
    value: F32
    key: I64  # the pair as user * n_items + item
    first: I64  # the first time of each row's pair

    @classmethod
    def of(cls, user: I32, item: I32, time: I64, value: F32, n_items: int) -> _Events:
        """The rows sorted; a stable sort, so rows at the same time keep the snapshot's order."""
        key = user.astype(np.int64) * n_items + item
        # a snapshot comes sorted by (user, movie, time): checking is O(n), sorting millions of
        # rows on two keys is not
        step = np.diff(key)
        if not np.all((step > 0) | ((step == 0) & (np.diff(time) >= 0))):
            order = np.lexsort((time, key))
            user, item, time, value, key = (a[order] for a in (user, item, time, value, key))
        starts = _starts(key)
        first = time[starts][np.cumsum(starts) - 1]
        return cls(user, item, time, value, key, first)

    def pair_first(self) -> I64:
        """The first time of every pair."""
        out: I64 = self.time[_starts(self.key)]
        return out

    def within(
        self, lo: int | None, hi: int | None
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """First and last row of each pair that starts in [lo, hi), counting rows before hi."""
        mask = np.ones(len(self.key), bool)
        if lo is not None:
            mask &= self.first >= lo
        if hi is not None:
            mask &= (self.first < hi) & (self.time < hi)
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            return rows, rows
        starts = np.flatnonzero(_starts(self.key[rows]))
        ends = np.r_[starts[1:], len(rows)] - 1
        return rows[starts], rows[ends]


def _period(watches: _Events, ratings: _Events, lo: int | None, hi: int | None) -> Period:
    """One period, each quantity from that period's events only.

    A watch: its distinct minutes streamed before ``hi`` (the snapshot counts each minute at the
    first time it was streamed, so a sum of rows before ``hi`` is exact); a rating: the pair's
    latest before ``hi``, not a re-rating from after it.
    """
    first, last = watches.within(lo, hi)
    if len(first):
        # rows of a pair are contiguous: minutes is a sum over [first, last]
        csum = np.r_[0.0, np.cumsum(watches.value, dtype=np.float64)]
        minutes = (csum[last + 1] - csum[first]).astype(np.float32)
    else:
        minutes = np.zeros(0, np.float32)
    _, kept = ratings.within(lo, hi)
    return Period(
        watches.user[first],
        watches.item[first],
        minutes,
        watches.time[first],
        watches.time[last],
        ratings.user[kept],
        ratings.item[kept],
        ratings.value[kept],
        ratings.time[kept],
    )


def prepare(
    tables: dict[str, pa.Table],
    provenance: dict[str, Any],
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Prepared:
    """Index the tables and split them in time: train < val cut-off ≤ val < test cut-off ≤ test."""
    inter, rates, users, movies = (
        tables["interactions"],
        tables["ratings"],
        tables["users"],
        tables["movies"],
    )
    catalog = pa.concat_arrays(
        [
            movies["movie_id"].combine_chunks(),
            pc.unique(inter["movie_id"]).cast(pa.string()),
            pc.unique(rates["movie_id"]).cast(pa.string()),
        ]
    )
    item_ids = np.array(sorted(set(pc.unique(catalog).to_pylist())), dtype=str)
    value_set = pa.array(item_ids.tolist(), pa.string())
    user_ids = np.unique(
        np.concatenate(
            [
                users["user_id"].to_numpy(),
                inter["user_id"].to_numpy(),
                rates["user_id"].to_numpy(),
            ]
        ).astype(np.int64)
    )

    def items(col: pa.ChunkedArray) -> I32:
        """Catalog index of each movie id."""
        out: I32 = pc.index_in(col, value_set=value_set).to_numpy(zero_copy_only=False)
        return out.astype(np.int32)

    user_set = pa.array(user_ids)

    def uidx(col: pa.ChunkedArray) -> I32:
        """Index of each user id in the sorted user ids."""
        out: I32 = pc.index_in(col.cast(pa.int64()), value_set=user_set).to_numpy(
            zero_copy_only=False
        )
        return out.astype(np.int32)

    n_items = len(item_ids)
    watches = _Events.of(
        uidx(inter["user_id"]),
        items(inter["movie_id"]),
        inter["time_ns"].to_numpy().astype(np.int64),
        inter["minutes"].to_numpy().astype(np.float32),
        n_items,
    )
    ratings = _Events.of(
        uidx(rates["user_id"]),
        items(rates["movie_id"]),
        rates["time_ns"].to_numpy().astype(np.int64),
        rates["rating"].to_numpy().astype(np.float32),
        n_items,
    )
    # one time per (user, movie): its first watch, its first rating
    times = np.concatenate([watches.pair_first(), ratings.pair_first()])
    # Cut-offs on the snapshot's watch grain: a watch row's minutes all lie in its time bucket,
    # so only a cut-off on a bucket edge keeps later minutes out of the earlier period.
    grain = max(1, int(provenance.get("watch_grain_ns") or 1))

    def cut(fraction: float) -> int:
        t = _cut(times, fraction)
        return t // grain * grain if fraction > 0 else t  # no period after it: nothing to snap

    t_test = cut(test_fraction)
    t_val = min(cut(test_fraction + val_fraction), t_test) if val_fraction > 0 else t_test
    periods = {
        name: _period(watches, ratings, lo, hi)
        for name, lo, hi in (
            ("train", None, t_val),
            ("val", t_val, t_test),
            ("test", t_test, None),
            ("all", None, None),
        )
    }

    # demographics aligned with user_ids (unknown: gender "U", age -1)
    gender = np.full(len(user_ids), "U", dtype="<U1")
    age = np.full(len(user_ids), -1, dtype=np.int16)
    if users.num_rows:
        pos = np.searchsorted(user_ids, users["user_id"].to_numpy())
        g = np.array(pc.fill_null(users["gender"], "U").to_pylist(), dtype=str)
        gender[pos] = np.where(np.isin(g, ["M", "F"]), g, "U")
        age[pos] = pc.fill_null(users["age"], -1).to_numpy().astype(np.int16)

    occupation = np.full(len(user_ids), "", dtype=object)
    if users.num_rows and "occupation" in users.column_names:
        occupation[pos] = [o or "" for o in users["occupation"].to_pylist()]
    item_year, item_genres, genre_names = _movie_features(movies, item_ids)
    item_meta = _movie_meta(movies, item_ids)

    info = {
        "snapshot": provenance,
        "cutoffs_ns": {"val": t_val, "test": t_test},
        "watch_grain_ns": grain,
        "fractions": {"val": val_fraction, "test": test_fraction},
        "counts": {
            name: {
                "interactions": len(periods[name].inter_time),
                "ratings": len(periods[name].rate_time),
            }
            for name in PERIODS
        },
        "users": len(user_ids),
        "items": len(item_ids),
    }
    prepared = Prepared(
        item_ids,
        user_ids,
        gender,
        age,
        periods,
        info,
        occupation=occupation.astype(str),
        item_year=item_year,
        item_genres=item_genres,
        genre_names=genre_names,
        item_meta=item_meta,
    )
    check_disjoint(prepared)
    return prepared


def _movie_features(
    movies: pa.Table, item_ids: npt.NDArray[np.str_]
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.uint8], npt.NDArray[np.str_]]:
    """Release year (0 unknown) and genre flags of every catalog item, from the movies table."""
    year = np.zeros(len(item_ids), np.int16)
    ids = movies["movie_id"].to_pylist() if movies.num_rows else []
    pos = np.searchsorted(item_ids, np.array(ids, dtype=str)) if ids else np.zeros(0, np.int64)
    if ids and "year" in movies.column_names:
        year[pos] = pc.fill_null(movies["year"], 0).to_numpy().astype(np.int16)
    lists = movies["genres"].to_pylist() if ids and "genres" in movies.column_names else []
    names = np.array(sorted({g for gs in lists if gs for g in gs}), dtype=str)
    flags = np.zeros((len(item_ids), len(names)), np.uint8)
    col = {g: n for n, g in enumerate(names.tolist())}
    for row, gs in zip(pos.tolist(), lists, strict=False):
        for g in gs or ():
            flags[row, col[g]] = 1
    return year, flags, names


def _movie_meta(movies: pa.Table, item_ids: npt.NDArray[np.str_]) -> npt.NDArray[np.float32] | None:
    """``META_COLUMNS`` of every catalog item (NaN unknown), or None if the table has none.

    A source without them (MovieLens' ``u.item``: the columns, all null) gives None rather
    than a NaN block, so the ranker's features, and its column sampling, stay what they were.
    """
    present = [c for c in META_COLUMNS if c in movies.column_names]
    if not movies.num_rows or all(movies[c].null_count == movies.num_rows for c in present):
        return None
    pos = np.searchsorted(item_ids, np.array(movies["movie_id"].to_pylist(), dtype=str))
    meta = np.full((len(item_ids), len(META_COLUMNS)), np.nan, np.float32)
    for j, c in enumerate(META_COLUMNS):
        if c in movies.column_names:
            col = pc.cast(movies[c], pa.float64()).to_numpy(zero_copy_only=False)
            meta[pos, j] = np.where(np.isfinite(col), col, np.nan)
    return meta


def check_disjoint(prepared: Prepared) -> None:
    """Raise LeakageError unless periods are ordered in time and share no watched pair.

    Every time column a period's quantities depend on must lie inside the period: a watch's
    first minute and the latest minute counted in it, and the time of the rating kept.
    """
    p = prepared.periods
    cut = prepared.info["cutoffs_ns"]
    bounds = {
        "train": (None, cut["val"]),
        "val": (cut["val"], cut["test"]),
        "test": (cut["test"], None),
    }
    for name, (lo, hi) in bounds.items():
        for column in TIME_COLUMNS:
            t = getattr(p[name], column)
            if len(t) and lo is not None and int(t.min()) < lo:
                raise LeakageError(f"{name} has an event before its period starts ({column})")
            if len(t) and hi is not None and int(t.max()) >= hi:
                raise LeakageError(f"{name} has an event after its period ends ({column})")
    n = prepared.n_items
    watched = {
        name: unique_ints(p[name].inter_user.astype(np.int64) * n + p[name].inter_item)
        for name in PERIODS
    }
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = np.intersect1d(watched[a], watched[b], assume_unique=True)
        if len(shared):
            raise LeakageError(f"{len(shared)} watched (user, movie) pairs in both {a} and {b}")
        if len(p[a].rate_time) and len(p[b].rate_time):
            ra = unique_ints(p[a].rate_user.astype(np.int64) * n + p[a].rate_item)
            rb = unique_ints(p[b].rate_user.astype(np.int64) * n + p[b].rate_item)
            if len(np.intersect1d(ra, rb, assume_unique=True)):
                raise LeakageError(f"rated (user, movie) pairs in both {a} and {b}")


# --- storage -------------------------------------------------------------------------------


def save(prepared: Prepared, out: Path) -> None:
    """Write the prepared data as Parquet plus ``split.json`` (no pickle)."""
    out.mkdir(parents=True, exist_ok=True)
    items: dict[str, Any] = {"movie_id": prepared.item_ids.tolist()}
    if prepared.item_year is not None and prepared.item_genres is not None:
        names = prepared.genre_names if prepared.genre_names is not None else np.zeros(0, str)
        items["year"] = prepared.item_year
        items["genres"] = [names[np.flatnonzero(r)].tolist() for r in prepared.item_genres]
    if prepared.item_meta is not None:
        for j, c in enumerate(META_COLUMNS):
            items[c] = prepared.item_meta[:, j]
    pq.write_table(pa.table(items), out / "items.parquet")
    users: dict[str, Any] = {
        "user_id": prepared.user_ids,
        "gender": prepared.gender.tolist(),
        "age": prepared.age,
    }
    if prepared.occupation is not None:
        users["occupation"] = prepared.occupation.tolist()
    pq.write_table(pa.table(users), out / "users.parquet")
    for name, per in prepared.periods.items():
        pq.write_table(
            pa.table(
                {
                    "user": per.inter_user,
                    "item": per.inter_item,
                    "minutes": per.inter_minutes,
                    "time": per.inter_time,
                    "last": per.inter_last,
                }
            ),
            out / f"{name}_interactions.parquet",
        )
        pq.write_table(
            pa.table(
                {
                    "user": per.rate_user,
                    "item": per.rate_item,
                    "rating": per.rate_value,
                    "time": per.rate_time,
                }
            ),
            out / f"{name}_ratings.parquet",
        )
    (out / "split.json").write_text(json.dumps(prepared.info, indent=2, sort_keys=True) + "\n")


def load(folder: Path, periods_wanted: Sequence[str] = STORED) -> Prepared:
    """Read what ``save`` wrote: every period, or only ``periods_wanted`` (of ``STORED``).

    A stage reads only what it uses (a training stage ``train``, a refit ``all``): at a
    million users each period is 10-120 MB of Parquet, read again by every stage process.
    """
    items = pq.read_table(folder / "items.parquet")
    users = pq.read_table(folder / "users.parquet")
    wanted = set(periods_wanted)
    if "all" in wanted and not (folder / "all_interactions.parquet").is_file():
        wanted |= set(PERIODS)  # written before ``all`` was stored: all_periods() merges them
    periods = {}
    for name in STORED:
        if name not in wanted:
            continue
        if not (folder / f"{name}_interactions.parquet").is_file():
            continue
        it = pq.read_table(folder / f"{name}_interactions.parquet")
        rt = pq.read_table(folder / f"{name}_ratings.parquet")
        periods[name] = Period(
            it["user"].to_numpy().astype(np.int32),
            it["item"].to_numpy().astype(np.int32),
            it["minutes"].to_numpy().astype(np.float32),
            it["time"].to_numpy().astype(np.int64),
            it["last"].to_numpy().astype(np.int64),
            rt["user"].to_numpy().astype(np.int32),
            rt["item"].to_numpy().astype(np.int32),
            rt["rating"].to_numpy().astype(np.float32),
            rt["time"].to_numpy().astype(np.int64),
        )
    item_ids = np.array(items["movie_id"].to_pylist(), dtype=str)
    year, genres, names = (
        _movie_features(items, item_ids) if "genres" in items.column_names else (None, None, None)
    )
    return Prepared(
        item_ids=item_ids,
        user_ids=users["user_id"].to_numpy().astype(np.int64),
        # to_numpy, not to_pylist: 0.3 s against 3.5 s for a million users
        gender=users["gender"].to_numpy(zero_copy_only=False).astype(str),
        age=users["age"].to_numpy().astype(np.int16),
        periods=periods,
        info=json.loads((folder / "split.json").read_text()),
        occupation=(
            users["occupation"].to_numpy(zero_copy_only=False).astype(str)
            if "occupation" in users.column_names
            else None
        ),
        item_year=year,
        item_genres=genres,
        genre_names=names,
        item_meta=_movie_meta(items, item_ids),
    )
