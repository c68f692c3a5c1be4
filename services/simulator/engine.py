"""The event engine: sessions in vectorised batches, paced or as fast as possible.

Simulated time advances in ticks.  In each tick new accounts appear, active users start
sessions (by per-user activity, with a daily rhythm), some sessions first ask the
recommender, every session picks one movie and streams it minute by minute, and some end in
a rating.  Events go into time buckets keyed by the time they are emitted; a bucket is
complete once its tick has been simulated (no later tick makes earlier events), so it is
sorted and formatted into lines: event-time order per user, except for injected late events.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.common.events import RecommendationEvent, format_line
from services.simulator.recommenders import OracleRecommender, RecoAnswer, Recommender
from services.simulator.scenarios import Scenario, malform
from services.simulator.world import World

log = logging.getLogger(__name__)

NS: Final = 1_000_000_000
DAY_NS: Final = 86_400 * NS
WATCH, RATE, CREATE, RECO = 0, 1, 2, 3
LABELS: Final = ("", "duplicate", "late", "cold_start", "rating_spam")
_DUP, _LATE, _COLD, _SPAM = 1, 2, 3, 4


@dataclass(frozen=True)
class Behaviour:
    """How simulated users choose, in standard deviations of true utility (see world.py).

    Every field has a ``MARQUEE_SIM_*`` setting of the same name (``settings.py``); the
    simulator's README describes the model they parameterise.
    """

    own_candidates: int = 64
    """Movies a user considers when choosing alone: 3/4 drawn by popularity, 1/4 uniformly."""
    own_temperature: float = 0.5
    """Softmax temperature of the choice among those candidates (lower: pickier)."""
    list_temperature: float = 0.5
    """Softmax temperature of the choice within a recommended list."""
    position_decay: float = 0.05
    """Logit lost per position down a list: earlier positions get more attention."""
    accept_bias: float = -4.5
    """p(pick from the list) = sigmoid(accept_bias + accept_slope * list attractiveness)."""
    accept_slope: float = 1.2
    """See ``accept_bias``; attractiveness is the list's soft maximum of utility."""
    rewatch_memory: int = 32
    """Movies a user remembers having finished (the most recent ones; 0: no memory)."""
    rewatch_penalty: float = 3.0
    """Utility a remembered, finished movie loses when the user chooses again: at the
    default temperatures about exp(-6), so users rarely rewatch what they finished."""
    finished_share: float = 0.9
    """A session that streams this share of the movie's remaining minutes finished it."""


def parse_start(text: str) -> int:
    """Zone-less ISO time as ns since the epoch (read as UTC, like the stream's times)."""
    t = dt.datetime.fromisoformat(text)
    if t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return int((t - dt.datetime(1970, 1, 1)).total_seconds()) * NS


@dataclass
class EngineConfig:
    """How the world behaves over time (the world itself is ``WorldConfig``)."""

    seed: int = 42
    start_ns: int = parse_start("2026-03-02T00:00:00")
    tick_s: float = 60.0
    sessions_per_user_day: float = 1.2
    new_accounts_per_day: float = 2_000.0
    reco_share: float = 0.2
    scenario: Scenario = field(default_factory=Scenario)
    scenario_origin_ns: int | None = None
    """What the scenario's ``*_at_hours`` count from (default ``start_ns``; live: after warm-up)."""
    behaviour: Behaviour = field(default_factory=Behaviour)


@dataclass
class Batch:
    """Lines of one emitted bucket with the user each belongs to and their injection labels."""

    lines: list[str]
    users: npt.NDArray[np.int64]
    labels: list[tuple[int, str]]
    """(offset within ``lines``, kind) of every injected line."""
    end_ns: int


@dataclass
class EventArrays:
    """One tick's events as arrays, in emit order (``Engine.step_arrays``).

    ``kind`` is WATCH, RATE, CREATE or RECO; ``movie`` a catalog index (-1 when none);
    ``value`` the minute (watch) or the stars (rating); ``recos`` the recommendation events of
    the RECO rows, in order.
    """

    time_ns: npt.NDArray[np.int64]
    user: npt.NDArray[np.int64]
    kind: npt.NDArray[np.int8]
    movie: npt.NDArray[np.int32]
    value: npt.NDArray[np.int32]
    recos: list[RecommendationEvent]


class _Pending:
    """Events waiting for their emit time, in coarse time buckets of struct-of-arrays chunks.

    Buckets are ``width_ns`` wide on the absolute clock; ``pop_until(t)`` returns every row
    due before ``t`` sorted by emit time and keeps the rest of the current bucket sorted.
    Chunk lists are compacted so a long run of small ticks cannot pile up tiny arrays.
    """

    N_COLS: Final = 7  # emit, time, user, kind, movie, value, label

    def __init__(self, width_ns: int) -> None:
        self.width = width_ns
        self.chunks: dict[int, list[tuple[npt.NDArray[Any], ...]]] = {}
        self.current: tuple[npt.NDArray[Any], ...] | None = None

    def push(self, cols: tuple[npt.NDArray[Any], ...]) -> None:
        """Add rows (any emit times at or after the last ``pop_until``)."""
        emit = cols[0]
        if len(emit) == 0:
            return
        b = emit // self.width
        order = np.argsort(b, kind="stable")
        bs = b[order]
        cuts = np.flatnonzero(np.diff(bs)) + 1
        starts = np.concatenate(([0], cuts)).tolist()
        ends = np.concatenate((cuts, [len(bs)])).tolist()
        sorted_cols = tuple(c[order] for c in cols)
        for s, e in zip(starts, ends, strict=True):
            key = int(bs[s])
            parts = self.chunks.setdefault(key, [])
            parts.append(tuple(c[s:e] for c in sorted_cols))
            if len(parts) >= 32:
                self.chunks[key] = [self._concat(parts)]

    def _concat(self, parts: list[tuple[npt.NDArray[Any], ...]]) -> tuple[npt.NDArray[Any], ...]:
        return tuple(np.concatenate([p[i] for p in parts]) for i in range(self.N_COLS))

    def pop_until(self, t_ns: int) -> tuple[npt.NDArray[Any], ...] | None:
        """Every row due before ``t_ns``, sorted by emit time (stable: push order on ties)."""
        last = (t_ns - 1) // self.width
        parts = [] if self.current is None else [self.current]
        for key in sorted(k for k in self.chunks if k <= last):
            parts.extend(self.chunks.pop(key))
        if not parts:
            return None
        cols = self._concat(parts)
        order = np.argsort(cols[0], kind="stable")
        cols = tuple(c[order] for c in cols)
        cut = int(np.searchsorted(cols[0], t_ns, side="left"))
        rest = tuple(c[cut:] for c in cols)
        self.current = rest if len(rest[0]) else None
        return tuple(c[:cut] for c in cols)

    def pending(self) -> int:
        """Rows waiting."""
        n = 0 if self.current is None else len(self.current[0])
        return n + sum(len(p[0]) for parts in self.chunks.values() for p in parts)


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return out


def _gumbel_argmax(
    rng: np.random.Generator, logits: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    g = -np.log(-np.log(rng.random(logits.shape) + 1e-12) + 1e-12)
    out: npt.NDArray[np.int64] = np.argmax(logits + g, axis=1)
    return out


class WatchMemory:
    """The movies each user finished most recently: a bounded ring of ``slots`` per user."""

    def __init__(self, capacity: int, slots: int, n_movies: int) -> None:
        small = n_movies <= np.iinfo(np.int16).max  # half the memory for every real catalog
        self.slots = slots
        self.n_movies = n_movies
        self.movies: npt.NDArray[np.signedinteger[Any]] = np.full(
            (capacity, slots), -1, np.int16 if small else np.int32
        )
        self.next = np.zeros(capacity, np.int32)

    def remember(self, uidx: npt.NDArray[np.int64], movies: npt.NDArray[np.int64]) -> None:
        """Note that users ``uidx`` (distinct) finished ``movies``; the oldest slot is reused."""
        if self.slots == 0 or len(uidx) == 0:
            return
        pos = self.next[uidx]
        self.movies[uidx, pos] = movies
        self.next[uidx] = (pos + 1) % self.slots

    def contains(
        self, uidx: npt.NDArray[np.int64], movies: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.bool_]:
        """``[n, c]``: whether user ``uidx[r]`` remembers finishing ``movies[r, j]``."""
        if self.slots == 0:
            return np.zeros(movies.shape, bool)
        mem = self.movies[uidx]
        out: npt.NDArray[np.bool_] = (movies[:, :, None] == mem[:, None, :]).any(axis=2)
        return out

    def load(self, movies: npt.NDArray[Any], nxt: npt.NDArray[Any]) -> None:
        """Take over a saved memory (``Engine.save_state``); refuse one of another shape."""
        if movies.shape != self.movies.shape or nxt.shape != self.next.shape:
            raise ValueError(
                f"saved memory is {movies.shape} users x slots, this world's {self.movies.shape}:"
                " resume with the world flags and rewatch memory the run was made with"
            )
        if movies.size and (int(movies.max()) >= self.n_movies or int(movies.min()) < -1):
            raise ValueError("saved memory names movies outside this catalog")
        self.movies[...] = movies
        self.next[...] = nxt % max(self.slots, 1)

    def finished(self, user_id: int) -> list[int]:
        """Movie indices user ``user_id`` remembers finishing, oldest first."""
        row = self.movies[user_id - 1]
        start = int(self.next[user_id - 1])
        order = np.r_[row[start:], row[:start]]
        return [int(m) for m in order if m >= 0]


class Engine:
    """Simulates the world tick by tick and yields formatted ``Batch``es of stream lines."""

    def __init__(
        self, world: World, config: EngineConfig, recommender: Recommender | None = None
    ) -> None:
        self.world = world
        self.cfg = config
        self.recommender = recommender
        sc = config.scenario
        ss = np.random.SeedSequence([config.seed, 7])
        self.rng_sess, self.rng_choice, self.rng_inject, self.rng_sched = (
            np.random.default_rng(s) for s in ss.spawn(4)
        )
        self.tick_ns = int(config.tick_s * NS)
        self.now_ns = config.start_ns
        self.origin_ns = (
            config.start_ns if config.scenario_origin_ns is None else config.scenario_origin_ns
        )
        # Coarse buckets of at least a minute: small live ticks share them.
        self.pending = _Pending(max(self.tick_ns, 60 * NS))
        self.busy_until = np.zeros(world.capacity, np.int64)
        self.n_active = world.n_users
        self.act_cum = np.cumsum(world.activity, dtype=np.float64)
        cat = world.catalog
        self.n_movies = len(cat)
        self.watch_prefix = [f"GET /data/m/{m}/" for m in cat.ids]
        self.rate_prefix = [f"GET /rate/{m}=" for m in cat.ids]
        self.runtime = cat.runtime.astype(np.int64)
        self.base_pop = cat.popularity.astype(np.float64) ** 0.9
        self.watch_counts = np.zeros(self.n_movies, np.float64)
        self._set_pop_weights(self.base_pop)
        self.behaviour = config.behaviour
        self.memory = WatchMemory(world.capacity, self.behaviour.rewatch_memory, self.n_movies)
        if isinstance(recommender, OracleRecommender):  # the oracle knows what users finished
            recommender.memory = self.memory
        self.reco_payload: dict[int, RecommendationEvent] = {}
        self._next_reco = 0
        self.stats: dict[str, int] = {
            "sessions": 0,
            "reco_calls": 0,
            "reco_accepted": 0,
            "new_accounts": 0,
            "lines": 0,
        }
        self.malformed_answers: dict[str, int] = {}
        self.kind_counts = np.zeros(4, np.int64)
        """Lines emitted by kind (watch, rate, create_account, recommendation)."""
        self.reco_status: dict[int, int] = {}
        self.reco_ms: list[int] = []
        """Response times not yet read by the runner (it drains this list)."""
        # Scenario schedule.
        self.cold_users: list[int] = []
        self.spam_users: list[int] = []
        self.spam_movie: int | None = None
        self._cold_left = 0
        self._spam_left = 0
        if sc.drift_at_hours is not None:
            world.set_drift(
                self.origin_ns + int(sc.drift_at_hours * 3600 * NS),
                sc.drift_fraction,
                sc.drift_strength,
                seed=config.seed + 101,
            )
        if sc.cold_start_at_hours is not None:
            self._cold_left = sc.cold_start_users
        if sc.spam_at_hours is not None:
            self._spam_left = sc.spam_accounts
            if sc.spam_movie:
                self.spam_movie = cat.index[sc.spam_movie]
            else:  # an obscure movie: pushing it is what a ring would pay for
                order = np.argsort(cat.popularity, kind="stable")
                self.spam_movie = int(
                    order[int(self.rng_sched.integers(0, max(1, len(order) // 4)))]
                )

    # --- helpers ------------------------------------------------------------------------

    def _set_pop_weights(self, w: npt.NDArray[np.float64]) -> None:
        self.pop_cum = np.cumsum(w)

    def _new_user_ids(self, n: int) -> npt.NDArray[np.int64]:
        n = min(n, self.world.capacity - self.n_active)
        ids = np.arange(self.n_active + 1, self.n_active + 1 + n, dtype=np.int64)
        self.n_active += n
        self.stats["new_accounts"] += n
        return ids

    def _in_window(self, at_hours: float | None, window_s: float, t0: int, t1: int) -> float:
        """Share of the scenario window that falls within tick [t0, t1)."""
        if at_hours is None:
            return 0.0
        a = self.origin_ns + int(at_hours * 3600 * NS)
        b = a + int(window_s * NS)
        overlap = max(0, min(b, t1) - max(a, t0))
        return overlap / max(1, b - a)

    # --- one tick -----------------------------------------------------------------------

    def step(self) -> Batch:
        """Simulate one tick and return the lines whose emit time falls inside it."""
        t0, t1 = self.now_ns, self.now_ns + self.tick_ns
        self._advance(t0, t1)
        return self._emit(self.pending.pop_until(t1), t1)

    def step_arrays(self) -> EventArrays:
        """Simulate one tick and return its events as arrays instead of formatted lines.

        For in-process experiments (benchmarks) that would only parse the lines back; scenario
        line injections (malformed, duplicate) are not applied here.
        """
        t0, t1 = self.now_ns, self.now_ns + self.tick_ns
        self._advance(t0, t1)
        cols = self.pending.pop_until(t1)
        if cols is None:
            z = np.zeros(0, np.int64)
            return EventArrays(z, z, z.astype(np.int8), z.astype(np.int32), z.astype(np.int32), [])
        _, time_ns, user, kind, movie, value, _ = cols
        self.kind_counts += np.bincount(kind, minlength=4)
        recos = [self.reco_payload.pop(int(v)) for v in value[kind == RECO].tolist()]
        return EventArrays(time_ns, user, kind, movie, value, recos)

    def _advance(self, t0: int, t1: int) -> None:
        self.pending.push(self._simulate(t0, t1))
        self.now_ns = t1
        alpha = self.cfg.scenario.feedback_loop
        if alpha > 0:  # what gets watched gets shown more: popularity feeds on itself
            self.watch_counts *= 0.995 ** ((t1 - t0) / 60 / NS)
            share = self.watch_counts / max(1e-9, float(self.watch_counts.mean()))
            self._set_pop_weights(self.base_pop * (1.0 + alpha * share))

    def warm_up(self, until_ns: int, tick_s: float = 60.0) -> None:
        """Simulate up to ``until_ns`` in big ticks, emitting nothing, calling no one.

        A live stream should open with users already mid-movie, as the real one does.
        """
        rec, self.recommender = self.recommender, None
        big = int(tick_s * NS)
        try:
            while self.now_ns < until_ns:
                t1 = min(until_ns, self.now_ns + big)
                self._advance(self.now_ns, t1)
                self.pending.pop_until(t1)
        finally:
            self.recommender = rec

    def _simulate(self, t0: int, t1: int) -> tuple[npt.NDArray[Any], ...]:
        cfg, sc, rs = self.cfg, self.cfg.scenario, self.rng_sess
        dt_s = (t1 - t0) / NS
        ev: list[tuple[npt.NDArray[Any], ...]] = []

        # New accounts (steady trickle, plus a cold-start burst when scheduled).
        n_new = int(rs.poisson(cfg.new_accounts_per_day * dt_s / 86_400))
        new_ids = self._new_user_ids(n_new)
        cold_n = 0
        share = self._in_window(sc.cold_start_at_hours, sc.cold_start_window_s, t0, t1)
        if share > 0 and self._cold_left > 0:
            cold_n = min(self._cold_left, math.ceil(sc.cold_start_users * share))
            self._cold_left -= cold_n
        cold_ids = self._new_user_ids(cold_n)
        self.cold_users.extend(cold_ids.tolist())
        acc_ids = np.concatenate([new_ids, cold_ids])
        acc_t = (t0 + rs.integers(0, t1 - t0, len(acc_ids)) // NS * NS).astype(np.int64)
        acc_label = np.concatenate(
            [np.zeros(len(new_ids), np.int8), np.full(len(cold_ids), _COLD, np.int8)]
        )
        ev.append(self._rows(acc_t, acc_ids, CREATE, -1, 0, acc_label))

        # Regular sessions: users by activity, with a daily rhythm peaking in the evening.
        hour = ((t0 // NS) % 86_400) / 3600
        rhythm = 1.0 + 0.6 * math.sin(2 * math.pi * (hour - 15) / 24)
        lam = cfg.sessions_per_user_day * self.n_active * rhythm * dt_s / 86_400
        total = self.act_cum[self.n_active - 1]
        n = int(rs.poisson(lam))
        users = np.searchsorted(self.act_cum, rs.random(n) * total, side="right").astype(np.int64)
        users = np.minimum(users, self.n_active - 1) + 1
        starts = t0 + rs.integers(0, t1 - t0, n)
        # New accounts start their first session soon after creating it.
        users = np.concatenate([users, acc_ids])
        starts = np.concatenate([starts, acc_t + rs.integers(10, 300, len(acc_ids)) * NS])
        starts = starts // NS * NS
        free = self.busy_until[users - 1] <= starts
        users, starts = users[free], starts[free]
        _, first = np.unique(users, return_index=True)
        keep = np.sort(first)
        users, starts = users[keep], starts[keep]
        if len(users):
            ev.extend(self._sessions(users, starts))

        # A rating-spam ring: new accounts that each give one movie five stars.
        share = self._in_window(sc.spam_at_hours, sc.spam_window_s, t0, t1)
        if share > 0 and self._spam_left > 0 and self.spam_movie is not None:
            k = min(self._spam_left, math.ceil(sc.spam_accounts * share))
            self._spam_left -= k
            ids = self._new_user_ids(k)
            self.spam_users.extend(ids.tolist())
            ct = (t0 + rs.integers(0, t1 - t0, len(ids))) // NS * NS
            rt = ct + rs.integers(20, 240, len(ids)) * NS
            lab = np.full(len(ids), _SPAM, np.int8)
            ev.append(self._rows(ct, ids, CREATE, -1, 0, lab))
            ev.append(self._rows(rt, ids, RATE, self.spam_movie, 5, lab))
            self.busy_until[ids - 1] = rt + 3600 * NS

        cols = tuple(np.concatenate([e[i] for e in ev]) for i in range(7))
        # Late events: emitted after their time, out of order on purpose.
        if sc.late_rate > 0 and len(cols[0]):
            ri = self.rng_inject
            late = (ri.random(len(cols[0])) < sc.late_rate) & (cols[6] == 0)
            delay = (ri.uniform(60, sc.late_max_s, int(late.sum())) * NS).astype(np.int64)
            cols[0][late] += delay
            cols[6][late] = _LATE
        return cols

    def _rows(
        self,
        t: npt.NDArray[np.int64],
        users: npt.NDArray[np.int64],
        kind: int,
        movie: int | npt.NDArray[Any],
        value: int | npt.NDArray[Any],
        label: int | npt.NDArray[np.int8] = 0,
    ) -> tuple[npt.NDArray[Any], ...]:
        n = len(t)
        return (
            t.astype(np.int64),
            t.astype(np.int64),
            users.astype(np.int64),
            np.full(n, kind, np.int8),
            np.broadcast_to(np.asarray(movie, np.int32), (n,)).copy(),
            np.broadcast_to(np.asarray(value, np.int32), (n,)).copy(),
            np.broadcast_to(np.asarray(label, np.int8), (n,)).copy(),
        )

    def _sessions(
        self, users: npt.NDArray[np.int64], starts: npt.NDArray[np.int64]
    ) -> list[tuple[npt.NDArray[Any], ...]]:
        rc = self.rng_choice
        n = len(users)
        self.stats["sessions"] += n
        uidx = users - 1
        t_ref = int(starts[0]) if n else self.now_ns
        out: list[tuple[npt.NDArray[Any], ...]] = []
        movie = np.full(n, -1, np.int64)
        watch_at = starts + (rc.exponential(120, n) + 15).astype(np.int64) * NS

        if self.recommender is not None and self.cfg.reco_share > 0:
            asked = np.flatnonzero(rc.random(n) < self.cfg.reco_share)
            if len(asked):
                answers = self.recommender.recommend(users[asked], t_ref)
                self.stats["reco_calls"] += len(asked)
                reco_t, accepted, picks = self._react(users[asked], starts[asked], answers, t_ref)
                out.append(self._reco_rows(reco_t, users[asked], answers))
                for a in answers:
                    self.reco_status[a.status] = self.reco_status.get(a.status, 0) + 1
                    self.reco_ms.append(a.ms)
                after = reco_t + (rc.exponential(60, len(asked)) + 5).astype(np.int64) * NS
                own_after = reco_t + (rc.exponential(180, len(asked)) + 20).astype(np.int64) * NS
                watch_at[asked] = np.where(accepted, after, own_after) // NS * NS
                movie[asked[accepted]] = picks[accepted]
                self.stats["reco_accepted"] += int(accepted.sum())

        own = np.flatnonzero(movie < 0)
        if len(own):
            movie[own] = self._own_choice(uidx[own], t_ref)

        z = self.world.utility(uidx, movie, t_ref).astype(np.float64)
        runtime = self.runtime[movie]
        frac = _sigmoid(0.5 + 1.2 * z + rc.normal(0, 1.0, n))
        first = np.where(rc.random(n) < 0.05, (rc.random(n) * runtime * 0.5).astype(np.int64), 0)
        minutes = np.clip(np.ceil(frac * runtime).astype(np.int64), 1, None)
        minutes = np.clip(minutes, 1, np.maximum(runtime - first, 1))
        # One watch line per minute streamed.
        rep_u = np.repeat(users, minutes)
        offsets = np.arange(int(minutes.sum()), dtype=np.int64) - np.repeat(
            np.cumsum(minutes) - minutes, minutes
        )
        wt = np.repeat(watch_at, minutes) + offsets * 60 * NS
        out.append(
            self._rows(
                wt, rep_u, WATCH, np.repeat(movie, minutes), np.repeat(first, minutes) + offsets
            )
        )
        end = watch_at + minutes * 60 * NS
        finished = minutes >= self.behaviour.finished_share * (runtime - first)
        self.memory.remember(uidx[finished], movie[finished])
        # Ratings: likelier after finishing; higher when the movie truly suits the user.
        p_rate = 0.15 + 0.35 * finished
        rated = rc.random(n) < p_rate
        # Relative to what a user usually picks (z ~ 2.2), plus a fixed per-user leniency,
        # so ratings spread like MovieLens' (mean ~3.5, every value used).
        lenient = ((users * 2_654_435_761) % 1_000) / 1_000 - 0.5
        rating = np.rint(3.5 + 0.8 * (z - 2.2) + 0.8 * lenient + rc.normal(0, 0.8, n))
        rating = np.clip(rating, 1, 5).astype(np.int32)
        rt = end + rc.integers(5, 90, n) * NS
        out.append(self._rows(rt[rated], users[rated], RATE, movie[rated], rating[rated]))
        self.busy_until[uidx] = np.where(rated, rt, end) + 60 * NS
        if self.cfg.scenario.feedback_loop > 0:
            np.add.at(self.watch_counts, movie, minutes)
        return out

    def _own_choice(self, uidx: npt.NDArray[np.int64], t_ns: int) -> npt.NDArray[np.int64]:
        """A user choosing alone: the best-feeling of a few mostly popular candidates."""
        rc = self.rng_choice
        b = self.behaviour
        n, c = len(uidx), b.own_candidates
        n_pop = c * 3 // 4
        cand = np.empty((n, c), np.int64)
        cand[:, :n_pop] = np.searchsorted(
            self.pop_cum, rc.random((n, n_pop)) * self.pop_cum[-1], side="right"
        )
        cand[:, n_pop:] = rc.integers(0, self.n_movies, (n, c - n_pop))
        np.minimum(cand, self.n_movies - 1, out=cand)
        z = self.world.utility_matrix(uidx, cand, t_ns).astype(np.float64)
        z -= b.rewatch_penalty * self.memory.contains(uidx, cand)
        pick = _gumbel_argmax(rc, z / b.own_temperature)
        out: npt.NDArray[np.int64] = cand[np.arange(n), pick]
        return out

    def _react(
        self,
        users: npt.NDArray[np.int64],
        starts: npt.NDArray[np.int64],
        answers: list[RecoAnswer],
        t_ns: int,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """Whether each user picks from the list just shown, and what; better lists win more."""
        rc = self.rng_choice
        n = len(users)
        ms = np.array([a.ms for a in answers], np.int64)
        reco_t = starts + ms * 1_000_000
        lists = np.full((n, 20), -1, np.int64)
        for i, a in enumerate(answers):
            if a.movies:
                lists[i, : len(a.movies)] = a.movies
            if a.malformed:
                self.malformed_answers[a.malformed] = self.malformed_answers.get(a.malformed, 0) + 1
        valid = lists >= 0
        b = self.behaviour
        shown = np.maximum(lists, 0)
        z = self.world.utility_matrix(users - 1, shown, t_ns).astype(np.float64)
        # A movie the user just finished is no reason to open the list: re-serving history
        # earns little.
        z -= b.rewatch_penalty * self.memory.contains(users - 1, shown)
        # Earlier positions get more attention.
        logits = z / b.list_temperature - b.position_decay * np.arange(20)
        logits = np.where(valid, logits, -np.inf)
        has = valid.any(axis=1)
        mx = np.where(has, logits.max(axis=1), 0.0)
        with np.errstate(invalid="ignore"):  # inf - inf in rows without a list; masked below
            total = np.where(valid, np.exp(logits - mx[:, None]), 0.0).sum(axis=1)
        # A row without a usable list sums to 0; log(1) keeps it finite, ``has`` zeroes it.
        lse = mx + np.log(np.where(has, total, 1.0))
        attract = b.list_temperature * lse
        p = np.where(has, _sigmoid(b.accept_bias + b.accept_slope * attract), 0.0)
        accepted = rc.random(n) < p
        pick_col = _gumbel_argmax(rc, np.where(valid, logits, -1e9))
        picks = lists[np.arange(n), pick_col]
        return reco_t, accepted & has, picks

    def _reco_rows(
        self, reco_t: npt.NDArray[np.int64], users: npt.NDArray[np.int64], answers: list[RecoAnswer]
    ) -> tuple[npt.NDArray[Any], ...]:
        ri = self.rng_sched
        n = len(users)
        digits = ri.choice(np.array([3, 6, 9]), n)
        frac = ri.integers(0, NS, n)
        t = reco_t + frac % (NS // 10)  # sub-second jitter; the line keeps 3, 6 or 9 digits
        host = self.recommender.host if self.recommender else "none"
        ids = self.world.catalog.ids
        payload = np.empty(n, np.int32)
        for i, a in enumerate(answers):
            d = int(digits[i])
            ti = int(t[i]) // 10 ** (9 - d) * 10 ** (9 - d)
            t[i] = ti
            logged = a.logged if a.status == 200 else ()
            if a.status == 200 and not logged and a.movies:
                logged = tuple(ids[m] for m in a.movies)
            ev = RecommendationEvent(ti, int(users[i]), host, a.status, logged, a.error, a.ms, d)
            self.reco_payload[self._next_reco] = ev
            payload[i] = self._next_reco
            self._next_reco += 1
        return self._rows(t, users, RECO, -1, payload)

    # --- emission -----------------------------------------------------------------------

    def _emit(self, cols: tuple[npt.NDArray[Any], ...] | None, end_ns: int) -> Batch:
        if cols is None or len(cols[0]) == 0:
            return Batch([], np.zeros(0, np.int64), [], end_ns)
        _, time_ns, user, kind, movie, value, label = cols
        n = len(time_ns)
        self.kind_counts += np.bincount(kind, minlength=4)
        secs = time_ns // NS
        uniq, inv = np.unique(secs, return_inverse=True)
        tstr = np.datetime_as_string(uniq.astype("datetime64[s]"), unit="s").tolist()
        ts = [tstr[i] for i in inv.tolist()]
        us = user.tolist()
        lines: list[str] = [""] * n
        kl = kind.tolist()
        ml = movie.tolist()
        vl = value.tolist()
        wp, rp = self.watch_prefix, self.rate_prefix
        for i in range(n):
            k = kl[i]
            if k == WATCH:
                lines[i] = f"{ts[i]},{us[i]},{wp[ml[i]]}{vl[i]}.mpg"
            elif k == RATE:
                lines[i] = f"{ts[i]},{us[i]},{rp[ml[i]]}{vl[i]}"
            elif k == CREATE:
                lines[i] = f"{ts[i]},{us[i]},GET /create_account"
            else:
                lines[i] = format_line(self.reco_payload.pop(vl[i]))
        labels = [(int(i), LABELS[int(label[i])]) for i in np.flatnonzero(label)]
        users_out = user
        sc = self.cfg.scenario
        if (sc.malformed_rate > 0 or sc.duplicate_rate > 0) and n:
            lines, users_out, labels = self._inject(lines, user, labels)
        self.stats["lines"] += len(lines)
        return Batch(lines, users_out, labels, end_ns)

    def _inject(
        self, lines: list[str], users: npt.NDArray[np.int64], labels: list[tuple[int, str]]
    ) -> tuple[list[str], npt.NDArray[np.int64], list[tuple[int, str]]]:
        """Insert malformed variants and duplicates right after the lines they copy."""
        sc, ri = self.cfg.scenario, self.rng_inject
        n = len(lines)
        mal = ri.random(n) < sc.malformed_rate
        dup = ri.random(n) < sc.duplicate_rate
        kinds = ri.integers(0, len(sc.malformed_kinds), n)
        pre = dict(labels)
        out: list[str] = []
        out_users: list[int] = []
        out_labels: list[tuple[int, str]] = []
        ul = users.tolist()
        for i in range(n):
            if i in pre:
                out_labels.append((len(out), pre[i]))
            out.append(lines[i])
            out_users.append(ul[i])
            if dup[i]:
                out_labels.append((len(out), "duplicate"))
                out.append(lines[i])
                out_users.append(ul[i])
            if mal[i]:
                kind = sc.malformed_kinds[int(kinds[i])]
                out_labels.append((len(out), f"malformed:{kind}"))
                out.append(malform(lines[i], kind, ri))
                out_users.append(ul[i])
        return out, np.array(out_users, np.int64), out_labels

    # --- driving ------------------------------------------------------------------------

    def run(self, until_ns: int | None = None, max_lines: int | None = None) -> Iterator[Batch]:
        """Yield batches until simulated time ``until_ns`` or ``max_lines`` lines."""
        emitted = 0
        while until_ns is None or self.now_ns < until_ns:
            batch = self.step()
            if max_lines is not None and emitted + len(batch.lines) >= max_lines:
                keep = max_lines - emitted
                batch = Batch(
                    batch.lines[:keep],
                    batch.users[:keep],
                    [lab for lab in batch.labels if lab[0] < keep],
                    batch.end_ns,
                )
                yield batch
                return
            emitted += len(batch.lines)
            yield batch

    def save_state(self, path: Path | str) -> None:
        """What a later run of the same world continues from: who exists, what they finished.

        Plain arrays (``.npz``, loaded without pickle): the accounts opened so far and each
        user's memory of finished movies.  Sessions in progress, the random streams and the
        feedback-loop counts are not kept: a resumed run starts its own sessions.
        """
        np.savez(
            Path(path),
            memory_movies=self.memory.movies,
            memory_next=self.memory.next,
            n_active=np.int64(self.n_active),
            end_ns=np.int64(self.now_ns),
            capacity=np.int64(self.world.capacity),
        )

    def resume(self, path: Path | str) -> None:
        """Continue from ``save_state``'s file: its accounts and what each user finished.

        The clock stays this engine's (``saved_end_ns`` tells where that run ended).
        """
        with np.load(Path(path), allow_pickle=False) as z:
            if int(z["capacity"]) != self.world.capacity:
                raise ValueError(
                    f"{path}: saved for a world of {int(z['capacity']):,} user slots, this one"
                    f" has {self.world.capacity:,}: resume with the world flags of that run"
                )
            n_active = int(z["n_active"])
            if not self.world.n_users <= n_active <= self.world.capacity:
                raise ValueError(f"{path}: {n_active:,} active users do not fit this world")
            self.memory.load(z["memory_movies"], z["memory_next"])
            self.n_active = n_active

    def summary(self) -> dict[str, Any]:
        """Counts and scenario facts for ``truth/summary.json``."""
        return {
            "stats": dict(self.stats),
            "malformed_answers": dict(self.malformed_answers),
            "reco_status": {str(k): v for k, v in sorted(self.reco_status.items())},
            "lines_by_kind": dict(
                zip(
                    ("watch", "rate", "create_account", "recommendation"),
                    self.kind_counts.tolist(),
                    strict=True,
                )
            ),
            "scenario": self.cfg.scenario.to_json(),
            "start_ns": self.cfg.start_ns,
            "end_ns": self.now_ns,
            "n_active_users": self.n_active,
            "cold_start_users": self.cold_users,
            "spam_users": self.spam_users,
            "spam_movie": None
            if self.spam_movie is None
            else self.world.catalog.ids[self.spam_movie],
            "drift_at_ns": self.world.drift_at_ns,
        }


STATE_FILE: Final = "state.npz"
"""The engine's state at the end of a run, under ``<run_dir>/truth/`` (``Engine.save_state``)."""


def state_file(run_dir: Path | str) -> Path:
    """Where a run in ``run_dir`` saves its end state (``TruthWriter``; ``live --resume``)."""
    return Path(run_dir) / "truth" / STATE_FILE


def saved_end_ns(path: Path | str) -> int:
    """When the run whose state ``path`` holds ended (simulated ns since the epoch)."""
    with np.load(Path(path), allow_pickle=False) as z:
        return int(z["end_ns"])


class TruthWriter:
    """Writes ``<run_dir>/truth/``: the hidden model, injected-line labels, a run summary."""

    def __init__(self, run_dir: Path | str, world: World, save_model: bool = True) -> None:
        """Create the folder; build the ``Engine`` first so its drift is saved too."""
        self.dir = Path(run_dir) / "truth"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.world = world
        self.index = 0
        if save_model:  # written first, so a live run can be scored while it goes on
            world.save_truth(self.dir)
        self._inj = (self.dir / "injected.jsonl").open("w", encoding="utf-8")

    def record(self, batch: Batch) -> None:
        """Note the global line index of every injected line of ``batch``."""
        for off, kind in batch.labels:
            rec = {"index": self.index + off, "kind": kind, "line": batch.lines[off]}
            self._inj.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.index += len(batch.lines)

    def close(self, engine: Engine) -> None:
        """Flush labels and write the model and the summary."""
        self._inj.close()
        if engine.cfg.scenario.feedback_loop > 0:
            np.save(self.dir / "feedback_watch_counts.npy", engine.watch_counts)
        engine.save_state(self.dir / STATE_FILE)  # what `sim live --resume` continues from
        doc = {**engine.summary(), "lines_total": self.index}
        (self.dir / "summary.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
