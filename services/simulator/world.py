"""The world: catalog, users and the hidden taste model, as numpy arrays (struct-of-arrays).

``World.build(WorldConfig(...))`` is deterministic in its seed.  The taste model is an
augmented factor model: ``z(u, m) = Ua[u] . Va[m]`` where ``Ua = [latent, genre affinity, 1]``
and ``Va = [latent, normalised genres, movie bias]``; the bias holds quality and popularity,
the genre affinity holds demographic effects.  ``z`` is standardised (mean 0, sd 1 over random
user-movie pairs), so behaviour parameters downstream read in standard deviations.

Ground truth is written with ``save_truth`` as .npy/.json (no pickle) and read back with
``GroundTruth.load``, which answers ``true_top_k`` without rebuilding the world.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.simulator.catalog import GENRES, N_GENRES, Catalog, build_catalog

OCCUPATIONS: Final = (
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
    "other or not specified",
)
"""The contract's occupations, in the order of the ``occupation`` code array."""
# Shares as in MovieLens 1M's users (per mille).
_OCC_WEIGHTS: Final = np.array(
    [87, 44, 29, 126, 19, 39, 112, 15, 32, 21, 64, 24, 50, 24, 40, 83, 12, 12, 47, 118], np.float64
)
_K12, _COLLEGE, _RETIRED = 8, 3, 11
GENDERS: Final = ("M", "F")
AGE_EDGES: Final = (18, 25, 35, 50)
"""Age buckets (<18, 18-24, 25-34, 35-49, 50+) used by the demographic taste effects."""
N_LATENT: Final = 16
TRUTH_VERSION: Final = 1


@dataclass(frozen=True)
class WorldConfig:
    """What defines a world; the same config always builds the same world."""

    seed: int = 42
    n_users: int = 1_000_000
    n_movies: int | None = 27_000
    """Movies in the catalog; None: all of MovieLens for a ``movielens:`` catalog, else 27,000."""
    new_user_capacity: int = 50_000
    catalog: str = "synthetic"


def _demographic_effects(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Genre affinity offsets per (age bucket, gender): young like animation, older drama..."""
    g = {name: i for i, (_, name) in enumerate(GENRES)}
    eff = rng.normal(0.0, 0.15, (len(AGE_EDGES) + 1, 2, N_GENRES))
    young = ["Animation", "Family", "Fantasy", "Adventure", "Comedy"]
    teen = ["Horror", "Action", "Science Fiction", "Comedy"]
    old = ["Drama", "History", "War", "Western", "Documentary"]
    for name in young:
        eff[0, :, g[name]] += 0.8
    for name in teen:
        eff[1, :, g[name]] += 0.5
    for name in old:
        eff[3:, :, g[name]] += 0.6
    for name in ["Romance", "Drama", "Family", "Music"]:
        eff[:, 1, g[name]] += 0.5
    for name in ["Action", "War", "Science Fiction", "Western"]:
        eff[:, 0, g[name]] += 0.4
    return eff.astype(np.float32)


class World:
    """Users, movies and true tastes; all per-user data lives in arrays indexed by ``id - 1``."""

    def __init__(
        self,
        config: WorldConfig,
        catalog: Catalog,
        age: npt.NDArray[np.int8],
        gender: npt.NDArray[np.int8],
        occupation: npt.NDArray[np.int8],
        activity: npt.NDArray[np.float32],
        user_factors: npt.NDArray[np.float32],
        movie_factors: npt.NDArray[np.float32],
        noisy: npt.NDArray[np.bool_],
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.age = age
        self.gender = gender
        self.occupation = occupation
        self.activity = activity
        self.user_factors = user_factors
        self.movie_factors = movie_factors
        self.noisy = noisy
        self.drift_at_ns: int | None = None
        self.drift_slot = np.full(0, -1, np.int32)
        self.drift_factors = np.zeros((0, user_factors.shape[1]), np.float32)

    # --- construction -------------------------------------------------------------------

    @classmethod
    def build(cls, config: WorldConfig) -> World:
        """Build the world deterministically from ``config.seed``."""
        ss = np.random.SeedSequence(config.seed)
        r_cat, r_users, r_taste = (np.random.default_rng(s) for s in ss.spawn(3))
        catalog = build_catalog(config.n_movies, r_cat, config.catalog)
        n = config.n_users + config.new_user_capacity

        occ_p = _OCC_WEIGHTS / _OCC_WEIGHTS.sum()
        occupation = r_users.choice(len(OCCUPATIONS), size=n, p=occ_p).astype(np.int8)
        age = np.clip(r_users.normal(36, 11, n), 19, 75)
        k12 = occupation == _K12
        age[k12] = r_users.integers(8, 18, int(k12.sum()))
        col = occupation == _COLLEGE
        age[col] = np.clip(r_users.normal(21.5, 2.5, int(col.sum())), 17, 35)
        ret = occupation == _RETIRED
        age[ret] = np.clip(r_users.normal(68, 7, int(ret.sum())), 55, 95)
        gender = (r_users.random(n) < 0.38).astype(np.int8)  # 0 = M, 1 = F
        # A little deliberate noise, as in the real API: e.g. an 8-year-old in sales/marketing.
        noisy = r_users.random(n) < 0.01
        occupation[noisy] = r_users.integers(0, len(OCCUPATIONS), int(noisy.sum()))
        age[noisy] = r_users.integers(7, 91, int(noisy.sum()))
        age_i = age.astype(np.int8)
        activity = r_users.lognormal(0.0, 0.9, n)
        activity = (activity / activity.mean()).astype(np.float32)

        # Taste: latent factors + genre affinity (demographics + individual) + movie bias.
        eff = _demographic_effects(r_taste)
        bucket = np.searchsorted(np.array(AGE_EDGES), age_i, side="right")
        latent_u = r_taste.normal(0, 0.42, (n, N_LATENT)).astype(np.float32)
        aff = eff[bucket, gender] + r_taste.normal(0, 0.5, (n, N_GENRES)).astype(np.float32)
        user_f = np.empty((n, N_LATENT + N_GENRES + 1), np.float32)
        user_f[:, :N_LATENT] = latent_u
        user_f[:, N_LATENT:-1] = aff
        user_f[:, -1] = 1.0
        del latent_u, aff
        m = len(catalog)
        g = catalog.genres.astype(np.float32)
        g /= np.maximum(g.sum(axis=1, keepdims=True), 1.0)
        log_pop = np.log(catalog.popularity.astype(np.float64))
        bias = 0.45 * catalog.quality + 0.35 * (log_pop - log_pop.mean()) / log_pop.std()
        movie_f = np.empty((m, N_LATENT + N_GENRES + 1), np.float32)
        movie_f[:, :N_LATENT] = r_taste.normal(0, 0.42, (m, N_LATENT))
        movie_f[:, N_LATENT:-1] = g
        movie_f[:, -1] = bias
        # Standardise z over random pairs, folding the shift into the constant column.
        su = r_taste.integers(0, n, 20_000)
        sm = r_taste.integers(0, m, 20_000)
        raw = np.einsum("ij,ij->i", user_f[su], movie_f[sm], dtype=np.float64)
        movie_f[:, -1] -= np.float32(raw.mean())
        movie_f /= np.float32(raw.std())
        return cls(config, catalog, age_i, gender, occupation, activity, user_f, movie_f, noisy)

    # --- users --------------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        """Users existing at the start of a run (ids ``1..n_users``)."""
        return self.config.n_users

    @property
    def capacity(self) -> int:
        """All users, including accounts reserved for creation during a run."""
        return len(self.age)

    def has_user(self, user_id: int) -> bool:
        """True when ``user_id`` is a known (existing or reserved) account."""
        return 1 <= user_id <= self.capacity

    def user_json(self, user_id: int) -> dict[str, Any]:
        """The user API's document."""
        i = user_id - 1
        return {
            "user_id": user_id,
            "age": int(self.age[i]),
            "occupation": OCCUPATIONS[int(self.occupation[i])],
            "gender": GENDERS[int(self.gender[i])],
        }

    # --- taste --------------------------------------------------------------------------

    def set_drift(self, at_ns: int, fraction: float, strength: float, seed: int) -> None:
        """From ``at_ns`` on, a ``fraction`` of users' tastes move by ``strength`` (0..1)."""
        rng = np.random.default_rng(seed)
        users = np.flatnonzero(rng.random(self.capacity) < fraction)
        new = self.user_factors[users].copy()
        k = N_LATENT + N_GENRES
        fresh = rng.normal(0, 1, (len(users), k)).astype(np.float32)
        fresh *= self.user_factors[:, :k].std(axis=0)
        new[:, :k] = (1 - strength) * new[:, :k] + strength * fresh
        self.drift_at_ns = at_ns
        self.drift_slot = np.full(self.capacity, -1, np.int32)
        self.drift_slot[users] = np.arange(len(users), dtype=np.int32)
        self.drift_factors = new

    def _factors(self, uidx: npt.NDArray[np.int64], t_ns: int | None) -> npt.NDArray[np.float32]:
        f = self.user_factors[uidx]
        if self.drift_at_ns is not None and t_ns is not None and t_ns >= self.drift_at_ns:
            slot = self.drift_slot[uidx]
            hit = slot >= 0
            if hit.any():
                f[hit] = self.drift_factors[slot[hit]]
        return f

    def utility(
        self,
        user_idx: npt.NDArray[np.int64],
        movie_idx: npt.NDArray[np.int64],
        t_ns: int | None = None,
    ) -> npt.NDArray[np.float32]:
        """True standardised utility of each (user index, movie index) pair."""
        uf = self._factors(user_idx, t_ns)
        out: npt.NDArray[np.float32] = np.einsum("ij,ij->i", uf, self.movie_factors[movie_idx])
        return out

    def utility_matrix(
        self, user_idx: npt.NDArray[np.int64], movie_idx: npt.NDArray[np.int64], t_ns: int | None
    ) -> npt.NDArray[np.float32]:
        """Utilities of each user (rows) for a per-row list of movies (``movie_idx[b, j]``)."""
        uf = self._factors(user_idx, t_ns)
        out: npt.NDArray[np.float32] = np.einsum("bk,bjk->bj", uf, self.movie_factors[movie_idx])
        return out

    def scores(self, user_id: int, t_ns: int | None = None) -> npt.NDArray[np.float32]:
        """True utility of every movie for one user."""
        uf = self._factors(np.array([user_id - 1]), t_ns)[0]
        out: npt.NDArray[np.float32] = self.movie_factors @ uf
        return out

    def true_top_k(self, user_id: int, k: int = 20, t_ns: int | None = None) -> list[str]:
        """Movie ids of the user's ``k`` truly best movies, best first."""
        return [self.catalog.ids[i] for i in top_k_indices(self.scores(user_id, t_ns), k)]

    def true_top_k_batch(
        self,
        user_ids: npt.NDArray[np.int64],
        k: int = 20,
        t_ns: int | None = None,
        exclude: npt.NDArray[np.integer[Any]] | None = None,
    ) -> npt.NDArray[np.int64]:
        """Movie indices (``[B, k]``, best first) of each user's truly best movies.

        ``exclude`` (``[B, E]``, -1 = none): movies left out of row ``b``'s list.
        """
        uf = self._factors(np.asarray(user_ids, np.int64) - 1, t_ns)
        s = uf @ self.movie_factors.T
        if exclude is not None and exclude.size:
            rows, cols = np.nonzero(exclude >= 0)
            s[rows, exclude[rows, cols]] = -np.inf
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
        out: npt.NDArray[np.int64] = np.take_along_axis(part, order, axis=1)
        return out

    # --- ground truth -------------------------------------------------------------------

    def save_truth(self, folder: Path | str, extra: dict[str, Any] | None = None) -> Path:
        """Write the hidden model as .npy + .json under ``folder`` (no pickle); return it."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / "user_factors.npy", self.user_factors, allow_pickle=False)
        np.save(d / "movie_factors.npy", self.movie_factors, allow_pickle=False)
        np.save(d / "user_activity.npy", self.activity, allow_pickle=False)
        np.save(d / "user_noisy.npy", self.noisy, allow_pickle=False)
        np.save(d / "movie_quality.npy", self.catalog.quality, allow_pickle=False)
        if self.drift_at_ns is not None:
            np.save(d / "drift_users.npy", np.flatnonzero(self.drift_slot >= 0) + 1)
            np.save(d / "drift_factors.npy", self.drift_factors, allow_pickle=False)
        (d / "movie_ids.json").write_text(json.dumps(self.catalog.ids) + "\n")
        meta = {
            "truth_version": TRUTH_VERSION,
            "config": asdict(self.config),
            "n_latent": N_LATENT,
            "genres": [name for _, name in GENRES],
            "drift_at_ns": self.drift_at_ns,
            "utility": "z(u, m) = user_factors[u - 1] . movie_factors[m]; standardised",
            **(extra or {}),
        }
        (d / "world.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        return d


def top_k_indices(scores: npt.NDArray[np.floating[Any]], k: int) -> npt.NDArray[np.int64]:
    """Indices of the ``k`` largest scores, best first (ties by index, deterministic)."""
    k = min(k, len(scores))
    part = np.argpartition(-scores, k - 1)[:k]
    out: npt.NDArray[np.int64] = part[np.lexsort((part, -scores[part]))]
    return out


class GroundTruth:
    """Read-only view of a saved world's hidden taste, for scoring models against truth."""

    def __init__(self, folder: Path | str) -> None:
        d = Path(folder)
        self.folder = d
        self.meta: dict[str, Any] = json.loads((d / "world.json").read_text())
        self.user_factors = np.load(d / "user_factors.npy", allow_pickle=False, mmap_mode="r")
        self.movie_factors = np.load(d / "movie_factors.npy", allow_pickle=False)
        self.movie_ids: list[str] = json.loads((d / "movie_ids.json").read_text())
        self.movie_index = {m: i for i, m in enumerate(self.movie_ids)}

    @classmethod
    def load(cls, folder: Path | str) -> GroundTruth:
        """Open ``<run_dir>/truth``."""
        return cls(folder)

    def scores(self, user_id: int) -> npt.NDArray[np.float32]:
        """True utility of every movie for one user (before any drift)."""
        out: npt.NDArray[np.float32] = self.movie_factors @ np.asarray(
            self.user_factors[user_id - 1]
        )
        return out

    def true_top_k(self, user_id: int, k: int = 20) -> list[str]:
        """The user's ``k`` truly best movie ids, best first."""
        return [self.movie_ids[i] for i in top_k_indices(self.scores(user_id), k)]

    def utility(self, user_id: int, movie_id: str) -> float:
        """True utility of one movie for one user."""
        return float(self.scores(user_id)[self.movie_index[movie_id]])
