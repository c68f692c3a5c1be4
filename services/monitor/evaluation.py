"""Online evaluation: exposures joined with watches and ratings, per user and arm, exactly once.

The evaluator walks forward in event time.  Each ``advance(until_ns)`` takes the exposures
whose 15-minute window is now wholly in the data (``t + window < until``: *decided*, the
contract's rule) and adds them to per-user counters; exposures still inside their window are
*pending*, counted but never judged early.  Because every exposure is judged exactly once, in
time order, and the counters are sums, the state after any sequence of ``advance`` calls equals
the state after one call to the last ``until`` -- and the state is checkpointed (a Parquet file
replaced atomically), so a restart neither loses nor double-counts.

Per user: the arm of the user's *first* exposure (later exposures under another arm -- the
config changed under them -- are excluded and counted, the user stays in the first arm),
exposures (requests), decided served lists, successes, fallbacks, errors, watch minutes and
ratings after the first exposure, and the pre-experiment covariate for CUPED: watch minutes in
``lookback`` before the first exposure.  Per arm: request counts and a latency histogram for
the guardrails.  Interleaved exposures credit each watched item to the arm that contributed it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from services.common import online
from services.common.experiment import UNEXPOSED
from services.common.fsio import fsync_dir

__all__ = [
    "EXPOSURE_COLUMNS",
    "LATENCY_BINS",
    "RATE_COLUMNS",
    "USER_COLUMNS",
    "WATCH_COLUMNS",
    "ArmRequests",
    "EvaluationState",
    "Evaluator",
    "Reader",
]

EXPOSURE_COLUMNS: Final = [
    "time_ns",
    "user_id",
    "experiment",
    "arm",
    "status",
    "latency_ms",
    "fallback",
    "items",
    "item_arms",
]
WATCH_COLUMNS: Final = ["time_ns", "user_id", "movie_id"]
RATE_COLUMNS: Final = ["time_ns", "user_id", "rating"]
USER_COLUMNS: Final = (
    "arm",
    "first_ns",
    "exposures",
    "lists",
    "successes",
    "fallbacks",
    "errors",
    "excluded",
    "watch_minutes",
    "ratings",
    "rating_sum",
    "pre_minutes",
)
LATENCY_BINS: Final = 5001
"""Latency histogram: one bin per millisecond up to 5 s, then one overflow bin."""
NEG_INF: Final = -(2**62)

Reader = Callable[[str, list[str], int | None, int | None], pa.Table]
"""``read(kind, columns, since_ns, until_ns)``: rows of one kind with since <= time < until."""


@dataclass
class ArmRequests:
    """Request-level counts of one arm (the guardrails' inputs)."""

    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    empty: int = 0
    latency: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(LATENCY_BINS, np.int64))

    def p99_ms(self) -> float:
        """99th percentile of the answer time (ms), from the histogram; 0 without requests."""
        total = int(self.latency.sum())
        if not total:
            return 0.0
        rank = int(np.ceil(0.99 * total))
        return float(np.searchsorted(np.cumsum(self.latency), rank))

    def to_json(self) -> dict[str, Any]:
        """Counts plus the non-empty histogram bins."""
        nz = np.nonzero(self.latency)[0]
        return {
            "requests": self.requests,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "empty": self.empty,
            "latency": {str(int(i)): int(self.latency[i]) for i in nz},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ArmRequests:
        """Inverse of ``to_json``."""
        hist = np.zeros(LATENCY_BINS, np.int64)
        for k, v in doc.get("latency", {}).items():
            hist[int(k)] = int(v)
        return cls(
            int(doc["requests"]), int(doc["errors"]), int(doc["fallbacks"]), int(doc["empty"]), hist
        )


def _empty_users() -> dict[str, npt.NDArray[np.int64]]:
    return {c: np.zeros(0, np.int64) for c in ("user_id", *USER_COLUMNS)}


@dataclass
class EvaluationState:
    """Everything the evaluator has counted: the checkpoint's content."""

    experiment: str
    edge_ns: int = NEG_INF
    """Exposures before this time are judged; those at or after it are not yet."""
    until_ns: int = NEG_INF
    """Watches before this time were in the data at the last step."""
    arms: list[str] = field(default_factory=list)
    """Arm names in the order their codes index (``users['arm']``)."""
    users: dict[str, npt.NDArray[np.int64]] = field(default_factory=_empty_users)
    """Columns ``user_id`` (sorted) and ``USER_COLUMNS``; ``credit:<arm>`` when interleaved."""
    requests: dict[str, ArmRequests] = field(default_factory=dict)
    unexposed: int = 0
    """Exposure events labelled ``unexposed`` (outside the experiment; not counted)."""
    other_experiments: int = 0
    """Exposure events of other experiments seen while reading (not counted)."""
    sequential_p: dict[str, float] = field(default_factory=dict)
    """Running minimum of each comparison's always-valid p-value (see ``stats.msprt``)."""
    steps: int = 0
    marks: dict[str, float] = field(default_factory=dict)
    """The decision policy's bookkeeping (users per arm at the last config change)."""

    @property
    def n_users(self) -> int:
        """Users with at least one counted exposure."""
        return int(self.users["user_id"].size)

    def arm_code(self, name: str) -> int:
        """The code of arm ``name``, added when new."""
        if name not in self.arms:
            self.arms.append(name)
        return self.arms.index(name)

    # --- checkpoint -------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the state to ``path`` atomically (temp file, fsync, rename, fsync folder)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "experiment": self.experiment,
            "edge_ns": self.edge_ns,
            "until_ns": self.until_ns,
            "arms": self.arms,
            "unexposed": self.unexposed,
            "other_experiments": self.other_experiments,
            "sequential_p": self.sequential_p,
            "steps": self.steps,
            "marks": self.marks,
            "requests": {a: r.to_json() for a, r in self.requests.items()},
        }
        table = pa.table({k: pa.array(v, pa.int64()) for k, v in self.users.items()})
        table = table.replace_schema_metadata({b"marquee.monitor": json.dumps(meta).encode()})
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    @classmethod
    def load(cls, path: Path) -> EvaluationState:
        """Read a checkpoint written by ``save``."""
        table = pq.read_table(path)
        meta = json.loads((table.schema.metadata or {})[b"marquee.monitor"])
        users = {n: table[n].to_numpy().astype(np.int64) for n in table.column_names}
        return cls(
            experiment=meta["experiment"],
            edge_ns=int(meta["edge_ns"]),
            until_ns=int(meta["until_ns"]),
            arms=list(meta["arms"]),
            users=users,
            requests={a: ArmRequests.from_json(d) for a, d in meta["requests"].items()},
            unexposed=int(meta["unexposed"]),
            other_experiments=int(meta["other_experiments"]),
            sequential_p={k: float(v) for k, v in meta["sequential_p"].items()},
            steps=int(meta["steps"]),
            marks={k: float(v) for k, v in meta.get("marks", {}).items()},
        )

    def equals(self, other: EvaluationState) -> bool:
        """Same counts (tests compare a restarted run with an uninterrupted one)."""
        if (self.edge_ns, self.arms, self.unexposed) != (
            other.edge_ns,
            other.arms,
            other.unexposed,
        ):
            return False
        if set(self.users) != set(other.users):
            return False
        if any(not np.array_equal(self.users[k], other.users[k]) for k in self.users):
            return False
        return all(
            a in other.requests and r.to_json() == other.requests[a].to_json()
            for a, r in self.requests.items()
        ) and set(self.requests) == set(other.requests)


def _np(table: pa.Table, name: str) -> npt.NDArray[Any]:
    out: npt.NDArray[Any] = table[name].to_numpy(zero_copy_only=False)
    return out


class Evaluator:
    """Counts one experiment's exposures and outcomes as event time moves forward."""

    def __init__(
        self,
        read: Reader,
        experiment: str,
        *,
        window_ns: int = online.WINDOW_NS,
        lookback_ns: int = 7 * 86_400 * 1_000_000_000,
        state: EvaluationState | None = None,
    ) -> None:
        self.read = read
        self.window_ns = window_ns
        self.lookback_ns = lookback_ns
        self.state = state or EvaluationState(experiment)
        self.pending = 0
        """Exposures of the experiment seen but not yet decided (at the last ``advance``)."""

    def advance(self, until_ns: int) -> bool:
        """Judge every exposure whose window ends before ``until_ns``; False if nothing to do."""
        st = self.state
        edge = until_ns - self.window_ns
        if edge <= st.edge_ns:
            self._count_pending(max(until_ns, st.until_ns))
            return False
        since = None if st.edge_ns == NEG_INF else st.edge_ns
        exposures = self.read("exposure", EXPOSURE_COLUMNS, since, edge)
        wsince = None if since is None else since - self.lookback_ns
        watches = self.read("watch", WATCH_COLUMNS, wsince, until_ns)
        rates = self.read("rate", RATE_COLUMNS, since, edge)
        self._step(exposures, watches, rates, since, edge, until_ns)
        st.edge_ns, st.until_ns = edge, until_ns
        st.steps += 1
        self._count_pending(until_ns)
        return True

    def _count_pending(self, until_ns: int) -> None:
        ex = self.read("exposure", ["experiment", "arm"], self.state.edge_ns, until_ns)
        mine = pc.and_(
            pc.equal(ex["experiment"], self.state.experiment), pc.not_equal(ex["arm"], UNEXPOSED)
        )
        self.pending = int(pc.sum(pc.cast(mine, pa.int64())).as_py() or 0)

    def _step(
        self,
        ex: pa.Table,
        watches: pa.Table,
        rates: pa.Table,
        since: int | None,
        edge: int,
        until: int,
    ) -> None:
        st = self.state
        mine = pc.equal(ex["experiment"], st.experiment)
        st.other_experiments += ex.num_rows - int(pc.sum(pc.cast(mine, pa.int64())).as_py() or 0)
        ex = ex.filter(mine)
        exposed = pc.not_equal(ex["arm"], UNEXPOSED)
        st.unexposed += ex.num_rows - int(pc.sum(pc.cast(exposed, pa.int64())).as_py() or 0)
        ex = ex.filter(exposed)
        # Time order (ties by user) decides which exposure is a user's first.
        ex = ex.take(pc.sort_indices(ex, [("time_ns", "ascending"), ("user_id", "ascending")]))
        n = ex.num_rows
        users_ex = _np(ex, "user_id").astype(np.int64)
        t_ex = _np(ex, "time_ns").astype(np.int64)
        arm_names = _np(ex, "arm").astype(object)
        codes = (
            np.array([st.arm_code(a) for a in arm_names], np.int64) if n else np.zeros(0, np.int64)
        )
        new_ids = self._add_users(users_ex, t_ex, codes, watches)
        rows = np.searchsorted(st.users["user_id"], users_ex)
        counted = st.users["arm"][rows] == codes if n else np.zeros(0, bool)
        u = st.users
        np.add.at(u["excluded"], rows[~counted], 1)
        ex, rows = ex.filter(pa.array(counted)), rows[counted]
        status = _np(ex, "status").astype(np.int64)
        fallback = pc.is_valid(ex["fallback"]).to_numpy(zero_copy_only=False)
        np.add.at(u["exposures"], rows, 1)
        np.add.at(u["errors"], rows, status != 200)
        np.add.at(u["fallbacks"], rows, fallback)
        self._requests(ex, status, fallback)
        if ex.num_rows:
            judged = online.outcomes(
                ex.append_column("row", pa.array(rows, pa.int64())),
                watches,
                window_ns=self.window_ns,
                until_ns=until,
            )
            jrows = _np(judged, "row").astype(np.int64)
            ok = pc.fill_null(judged["success"], False).to_numpy(zero_copy_only=False)
            np.add.at(u["lists"], jrows, 1)
            np.add.at(u["successes"], jrows, ok.astype(np.int64))
            self._credits(ex, rows, watches, until)
        self._after_first(watches, rates, since, edge)
        del new_ids

    def _add_users(
        self,
        users_ex: npt.NDArray[np.int64],
        t_ex: npt.NDArray[np.int64],
        codes: npt.NDArray[np.int64],
        watches: pa.Table,
    ) -> npt.NDArray[np.int64]:
        """Add users first seen now, with their first arm and pre-experiment minutes."""
        st = self.state
        if not users_ex.size:
            return users_ex
        ids, first = np.unique(users_ex, return_index=True)  # ``first``: earliest (time-sorted)
        known = np.isin(ids, st.users["user_id"], assume_unique=True)
        ids, first = ids[~known], first[~known]
        if not ids.size:
            return ids
        first_ns = t_ex[first]
        new = {c: np.zeros(ids.size, np.int64) for c in st.users}
        new["user_id"], new["arm"], new["first_ns"] = ids, codes[first], first_ns
        new["pre_minutes"] = self._minutes_before(ids, first_ns, watches)
        merged = {c: np.concatenate([st.users[c], new[c]]) for c in st.users}
        order = np.argsort(merged["user_id"], kind="stable")
        st.users = {c: v[order] for c, v in merged.items()}
        return ids

    def _minutes_before(
        self, ids: npt.NDArray[np.int64], first_ns: npt.NDArray[np.int64], watches: pa.Table
    ) -> npt.NDArray[np.int64]:
        wu = _np(watches, "user_id").astype(np.int64)
        wt = _np(watches, "time_ns").astype(np.int64)
        pos = np.searchsorted(ids, wu)
        pos[pos >= ids.size] = 0
        hit = ids[pos] == wu
        start = first_ns[pos] - self.lookback_ns
        hit &= (wt >= start) & (wt < first_ns[pos])
        return np.bincount(pos[hit], minlength=ids.size).astype(np.int64)

    def _after_first(
        self, watches: pa.Table, rates: pa.Table, since: int | None, edge: int
    ) -> None:
        """Watch minutes and ratings in [since, edge) of users after their first exposure."""
        u = self.state.users
        for table, col, value in ((watches, "watch_minutes", None), (rates, "ratings", "rating")):
            if not table.num_rows or not u["user_id"].size:
                continue
            t = _np(table, "time_ns").astype(np.int64)
            uid = _np(table, "user_id").astype(np.int64)
            pos = np.searchsorted(u["user_id"], uid)
            pos[pos >= u["user_id"].size] = 0
            keep = (u["user_id"][pos] == uid) & (t < edge) & (t > u["first_ns"][pos])
            if since is not None:
                keep &= t >= since
            np.add.at(u[col], pos[keep], 1)
            if value is not None:
                np.add.at(u["rating_sum"], pos[keep], _np(table, value).astype(np.int64)[keep])

    def _requests(
        self, ex: pa.Table, status: npt.NDArray[np.int64], fallback: npt.NDArray[np.bool_]
    ) -> None:
        st = self.state
        arms = _np(ex, "arm").astype(object)
        latency = np.minimum(_np(ex, "latency_ms").astype(np.int64), LATENCY_BINS - 1)
        empty = (pc.list_value_length(ex["items"]).to_numpy(zero_copy_only=False) == 0) & (
            status == 200
        )
        for name in np.unique(arms) if arms.size else []:
            sel = arms == name
            r = st.requests.setdefault(str(name), ArmRequests())
            r.requests += int(sel.sum())
            r.errors += int((status[sel] != 200).sum())
            r.fallbacks += int(fallback[sel].sum())
            r.empty += int(empty[sel].sum())
            r.latency += np.bincount(latency[sel], minlength=LATENCY_BINS)

    def _credits(
        self, ex: pa.Table, rows: npt.NDArray[np.int64], watches: pa.Table, until: int
    ) -> None:
        """Interleaved lists: each watched item credits the arm that contributed it."""
        tagged = pc.is_valid(ex["item_arms"]).to_numpy(zero_copy_only=False)
        if not tagged.any():
            return
        sub = ex.filter(pa.array(tagged))
        srows = rows[tagged]
        lengths = pc.list_value_length(sub["items"]).to_numpy(zero_copy_only=False)
        items = pc.list_flatten(sub["items"].combine_chunks())
        item_arms = pc.list_flatten(sub["item_arms"].combine_chunks()).to_numpy(
            zero_copy_only=False
        )
        single = pa.table(
            {
                "time_ns": pa.array(np.repeat(_np(sub, "time_ns"), lengths), pa.int64()),
                "user_id": pa.array(np.repeat(_np(sub, "user_id"), lengths), pa.int64()),
                "status": pa.array(np.full(int(lengths.sum()), 200), pa.int16()),
                "items": pa.ListArray.from_arrays(
                    pa.array(np.arange(len(items) + 1), pa.int32()), items
                ),
            }
        )
        judged = online.outcomes(single, watches, window_ns=self.window_ns, until_ns=until)
        ok = pc.fill_null(judged["success"], False).to_numpy(zero_copy_only=False)
        item_rows = np.repeat(srows, lengths)
        u = self.state.users
        for name in np.unique(item_arms):
            col = f"credit:{name}"
            if col not in u:
                u[col] = np.zeros(u["user_id"].size, np.int64)
            sel = (item_arms == name) & ok
            np.add.at(u[col], item_rows[sel], 1)
