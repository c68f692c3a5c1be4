"""Prepared data: the snapshot indexed into integer arrays and split in time, saved as Parquet.

Users and movies are indexed once (``user_ids`` sorted, ``item_ids`` the catalog), so every
model and the evaluation share one index space.  The split is temporal: events before the
validation cut-off train, the next period validates, the most recent period tests.  An
interaction belongs to the period its first watched minute falls in, a rating to the period of
its time stamp; disjointness is checked (``check_disjoint``), not assumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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

PERIODS: Final = ("train", "val", "test")
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
F32 = npt.NDArray[np.float32]


class LeakageError(AssertionError):
    """A held-out event also appears in (or precedes the end of) the training period."""


@dataclass(frozen=True)
class Period:
    """The interactions and ratings of one time period, as index arrays."""

    inter_user: I32
    inter_item: I32
    inter_minutes: F32
    inter_time: I64
    rate_user: I32
    rate_item: I32
    rate_value: F32
    rate_time: I64

    @classmethod
    def empty(cls) -> Period:
        """A period with no events."""
        i, f, t = np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return cls(i, i, f, t, i, i, f, t)

    def select(self, inter_mask: npt.NDArray[np.bool_], rate_mask: npt.NDArray[np.bool_]) -> Period:
        """The events where the masks are true."""
        return Period(
            self.inter_user[inter_mask],
            self.inter_item[inter_mask],
            self.inter_minutes[inter_mask],
            self.inter_time[inter_mask],
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
        out: I64 = np.unique(keys)
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
        """The same data with every period merged into ``train``: for the model that serves."""
        merged = Period(
            *(
                np.concatenate([getattr(self.periods[p], f) for p in PERIODS])
                for f in Period.__dataclass_fields__
            )
        )
        empty = Period.empty()
        info = {**self.info, "fit_on": "all"}
        return Prepared(
            self.item_ids,
            self.user_ids,
            self.gender,
            self.age,
            {"train": merged, "val": empty, "test": empty},
            info,
        )

    def segments(self) -> npt.NDArray[np.str_]:
        """``segment_key`` of every user (computed per distinct age, not per user)."""
        groups = self.age_groups()
        out: npt.NDArray[np.str_] = np.char.add(np.char.add(self.gender.astype("<U1"), "|"), groups)
        return out

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
    }
    return tables, provenance


def _cut(times: I64, fraction: float) -> int:
    """The time from which the last ``fraction`` of events lie (exact on int64 nanoseconds)."""
    n = len(times)
    if n == 0 or fraction <= 0:
        return int(times.max()) + 1 if n else 0
    k = min(n - 1, max(0, int(np.floor(n * (1.0 - fraction)))))
    return int(np.partition(times, k)[k])


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

    def uidx(col: pa.ChunkedArray) -> I32:
        """Index of each user id in the sorted user ids."""
        out: I32 = np.searchsorted(user_ids, col.to_numpy()).astype(np.int32)
        return out

    everything = Period(
        uidx(inter["user_id"]),
        items(inter["movie_id"]),
        inter["minutes"].to_numpy().astype(np.float32),
        inter["first_ns"].to_numpy().astype(np.int64),
        uidx(rates["user_id"]),
        items(rates["movie_id"]),
        rates["rating"].to_numpy().astype(np.float32),
        rates["time_ns"].to_numpy().astype(np.int64),
    )
    times = np.concatenate([everything.inter_time, everything.rate_time])
    t_test = _cut(times, test_fraction)
    t_val = min(_cut(times, test_fraction + val_fraction), t_test) if val_fraction > 0 else t_test
    periods = {}
    for name, lo, hi in (
        ("train", None, t_val),
        ("val", t_val, t_test),
        ("test", t_test, None),
    ):
        mi = np.ones(len(everything.inter_time), bool)
        mr = np.ones(len(everything.rate_time), bool)
        if lo is not None:
            mi &= everything.inter_time >= lo
            mr &= everything.rate_time >= lo
        if hi is not None:
            mi &= everything.inter_time < hi
            mr &= everything.rate_time < hi
        periods[name] = everything.select(mi, mr)

    # demographics aligned with user_ids (unknown: gender "U", age -1)
    gender = np.full(len(user_ids), "U", dtype="<U1")
    age = np.full(len(user_ids), -1, dtype=np.int16)
    if users.num_rows:
        pos = np.searchsorted(user_ids, users["user_id"].to_numpy())
        g = np.array(pc.fill_null(users["gender"], "U").to_pylist(), dtype=str)
        gender[pos] = np.where(np.isin(g, ["M", "F"]), g, "U")
        age[pos] = pc.fill_null(users["age"], -1).to_numpy().astype(np.int16)

    info = {
        "snapshot": provenance,
        "cutoffs_ns": {"val": t_val, "test": t_test},
        "fractions": {"val": val_fraction, "test": test_fraction},
        "counts": {
            name: {"interactions": len(p.inter_time), "ratings": len(p.rate_time)}
            for name, p in periods.items()
        },
        "users": len(user_ids),
        "items": len(item_ids),
    }
    prepared = Prepared(item_ids, user_ids, gender, age, periods, info)
    check_disjoint(prepared)
    return prepared


def check_disjoint(prepared: Prepared) -> None:
    """Raise LeakageError unless periods are ordered in time and share no watched pair."""
    p = prepared.periods
    cut = prepared.info["cutoffs_ns"]
    bounds = {
        "train": (None, cut["val"]),
        "val": (cut["val"], cut["test"]),
        "test": (cut["test"], None),
    }
    for name, (lo, hi) in bounds.items():
        for t in (p[name].inter_time, p[name].rate_time):
            if len(t) and lo is not None and int(t.min()) < lo:
                raise LeakageError(f"{name} has an event before its period starts")
            if len(t) and hi is not None and int(t.max()) >= hi:
                raise LeakageError(f"{name} has an event after its period ends")
    n = prepared.n_items
    watched = {
        name: np.unique(per.inter_user.astype(np.int64) * n + per.inter_item)
        for name, per in p.items()
    }
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = np.intersect1d(watched[a], watched[b], assume_unique=True)
        if len(shared):
            raise LeakageError(f"{len(shared)} watched (user, movie) pairs in both {a} and {b}")
        if len(p[a].rate_time) and len(p[b].rate_time):
            ra = np.unique(p[a].rate_user.astype(np.int64) * n + p[a].rate_item)
            rb = np.unique(p[b].rate_user.astype(np.int64) * n + p[b].rate_item)
            if len(np.intersect1d(ra, rb, assume_unique=True)):
                raise LeakageError(f"rated (user, movie) pairs in both {a} and {b}")


# --- storage -------------------------------------------------------------------------------


def save(prepared: Prepared, out: Path) -> None:
    """Write the prepared data as Parquet plus ``split.json`` (no pickle)."""
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"movie_id": prepared.item_ids.tolist()}), out / "items.parquet")
    pq.write_table(
        pa.table(
            {
                "user_id": prepared.user_ids,
                "gender": prepared.gender.tolist(),
                "age": prepared.age,
            }
        ),
        out / "users.parquet",
    )
    for name, per in prepared.periods.items():
        pq.write_table(
            pa.table(
                {
                    "user": per.inter_user,
                    "item": per.inter_item,
                    "minutes": per.inter_minutes,
                    "time": per.inter_time,
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


def load(folder: Path) -> Prepared:
    """Read what ``save`` wrote."""
    items = pq.read_table(folder / "items.parquet")
    users = pq.read_table(folder / "users.parquet")
    periods = {}
    for name in PERIODS:
        it = pq.read_table(folder / f"{name}_interactions.parquet")
        rt = pq.read_table(folder / f"{name}_ratings.parquet")
        periods[name] = Period(
            it["user"].to_numpy().astype(np.int32),
            it["item"].to_numpy().astype(np.int32),
            it["minutes"].to_numpy().astype(np.float32),
            it["time"].to_numpy().astype(np.int64),
            rt["user"].to_numpy().astype(np.int32),
            rt["item"].to_numpy().astype(np.int32),
            rt["rating"].to_numpy().astype(np.float32),
            rt["time"].to_numpy().astype(np.int64),
        )
    return Prepared(
        item_ids=np.array(items["movie_id"].to_pylist(), dtype=str),
        user_ids=users["user_id"].to_numpy().astype(np.int64),
        gender=np.array(users["gender"].to_pylist(), dtype=str),
        age=users["age"].to_numpy().astype(np.int16),
        periods=periods,
        info=json.loads((folder / "split.json").read_text()),
    )
