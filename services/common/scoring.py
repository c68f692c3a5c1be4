"""Vectorized top-k scoring of a model artifact, for every model family, through one interface.

The trainer evaluates with it and the recommender serves with it, so offline numbers describe
exactly the code that answers requests.  Array conventions (all in ``arrays.npz``):

every family
    ``item_ids`` (str [I]), ``user_ids`` (int64 [U], sorted ascending),
    ``seen_indptr`` (int64 [U+1]) + ``seen_indices`` (int32): items each user had in training,
    ``popular`` (int32 [P]): item indices by overall popularity, best first,
    ``segment_keys`` (str [S]) + ``segment_popular`` (int32 [S, P]): cold-start lists per
    demographic segment (``segment_key(gender, age)``), best first.
``svd`` / ``als`` (factor models)
    ``user_factors`` (float32 [U, F]), ``item_factors`` (float32 [I, F]), ``user_bias``
    (float32 [U]), ``item_bias`` (float32 [I]), ``global_bias`` (float32 [1]);
    score(u, i) = global + user_bias[u] + item_bias[i] + user_factors[u] · item_factors[i].
``knn`` (item-based, sparse top-k neighbours)
    ``knn_indptr`` (int64 [I+1]) + ``knn_indices`` (int32) + ``knn_sims`` (float32): row j
    lists the neighbours i of item j with sim(j, i); ``seen_weights`` (float32, aligned with
    ``seen_indices``): the user's centred rating or implicit weight for each seen item;
    ``item_bias`` (float32 [I]), ``global_bias`` (float32 [1]);
    score(u, i) = global + item_bias[i] + Σ_j∈seen(u) w_uj · sim(j, i).
``bpr``
    the factor arrays of ``svd`` / ``als`` (``implicit``'s BPR keeps its item bias as the last
    factor, against a constant 1 in the user factors).
``ease`` (closed-form item–item, Steck 2019)
    the graph arrays of ``knn``: row j holds the largest-magnitude weights B[j, i] of the EASE
    matrix over the top-N items, ``seen_weights`` are 1; ``item_bias`` is a small popularity
    tie-break so items outside the top-N (never scored by B) still order by popularity.
``popularity``
    ``item_scores`` (float32 [I]); every user gets the same scores.
``segment`` (demographic segment popularity)
    ``segment_scores`` (float32 [S, I]) per ``segment_keys`` row and ``user_segment`` (int32
    [U]): a known user gets their segment's scores, an unknown one the segment list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.common.artifacts import Artifact, ArtifactError

FAMILIES: Final = ("svd", "als", "bpr", "knn", "ease", "popularity", "segment")
FACTOR_FAMILIES: Final = ("svd", "als", "bpr")
GRAPH_FAMILIES: Final = ("knn", "ease")
NON_PERSONAL: Final = ("popularity", "segment")
"""Families whose lists do not depend on the user's history (the baselines)."""
AGE_GROUPS: Final = (
    ("child", 0, 12),
    ("teen", 13, 19),
    ("young_adult", 20, 35),
    ("middle_aged", 36, 55),
    ("senior", 56, 200),
)
_FACTOR_ARRAYS: Final = ("user_factors", "item_factors", "user_bias", "item_bias", "global_bias")
_GRAPH_ARRAYS: Final = (
    "knn_indptr",
    "knn_indices",
    "knn_sims",
    "seen_weights",
    "item_bias",
    "global_bias",
)
_REQUIRED: Final[dict[str, tuple[str, ...]]] = {
    **dict.fromkeys(FACTOR_FAMILIES, _FACTOR_ARRAYS),
    **dict.fromkeys(GRAPH_FAMILIES, _GRAPH_ARRAYS),
    "popularity": ("item_scores",),
    "segment": ("segment_scores", "user_segment"),
}
_COMMON: Final = ("item_ids", "user_ids", "seen_indptr", "seen_indices", "popular")

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def age_group(age: int | None) -> str:
    """The report's age group for ``age``: child < 13, teen 13–19, … senior > 55."""
    if age is None or age < 0:
        return "unknown"
    for name, lo, hi in AGE_GROUPS:
        if lo <= age <= hi:
            return name
    return "unknown"


def segment_key(gender: str | None, age: int | None) -> str:
    """Cold-start segment of a user: ``"<gender>|<age group>"``, e.g. ``"F|young_adult"``."""
    g = gender if gender in ("M", "F") else "U"
    return f"{g}|{age_group(age)}"


def _distinct(indices: npt.NDArray[Any]) -> npt.NDArray[np.int32]:
    """``indices`` without repeats, first occurrence kept, so a top-k slice is always distinct."""
    arr = np.asarray(indices, dtype=np.int32).reshape(-1)
    first = np.unique(arr, return_index=True)[1]
    return np.ascontiguousarray(arr[np.sort(first)])


class Scorer:
    """Scores and ranks a catalog for one artifact; cheap to query, safe to share across threads."""

    def __init__(self, artifact: Artifact) -> None:
        m = artifact.manifest
        a = artifact.arrays
        if m.family not in FAMILIES:
            raise ArtifactError(f"unknown model family {m.family!r}")
        missing = [k for k in (*_COMMON, *_REQUIRED[m.family]) if k not in a]
        if missing:
            raise ArtifactError(f"{m.family} artifact lacks arrays {missing}")
        self.family: str = m.family
        self.name: str = m.name
        self.version: str = m.version
        self.manifest = m
        self.item_ids: npt.NDArray[np.str_] = a["item_ids"]
        self.n_items = len(self.item_ids)
        # Plain Python strings, converted once: building a 20-id answer is then a list lookup.
        self._item_list: list[str] = [str(m) for m in self.item_ids.tolist()]
        self.user_ids: I64 = np.ascontiguousarray(a["user_ids"], dtype=np.int64)
        if len(self.user_ids) > 1 and not np.all(self.user_ids[1:] > self.user_ids[:-1]):
            raise ArtifactError("user_ids must be sorted and unique")
        self.seen_indptr: I64 = np.ascontiguousarray(a["seen_indptr"], dtype=np.int64)
        self.seen_indices = np.ascontiguousarray(a["seen_indices"], dtype=np.int32)
        self.popular = _distinct(a["popular"])
        keys = a.get("segment_keys", np.array([], dtype=str))
        seg = a.get("segment_popular", np.zeros((0, 0), dtype=np.int32))
        self.segments: dict[str, npt.NDArray[np.int32]] = {
            str(k): _distinct(seg[i]) for i, k in enumerate(keys)
        }
        self._item_index: dict[str, int] | None = None
        if self.family in FACTOR_FAMILIES:
            self.user_factors: F32 = np.ascontiguousarray(a["user_factors"], dtype=np.float32)
            self.item_factors: F32 = np.ascontiguousarray(a["item_factors"], dtype=np.float32)
            self.user_bias: F32 = np.ascontiguousarray(a["user_bias"], dtype=np.float32)
            self.item_bias: F32 = np.ascontiguousarray(a["item_bias"], dtype=np.float32)
            self.global_bias = float(a["global_bias"].reshape(-1)[0])
        elif self.family in GRAPH_FAMILIES:
            self.knn_indptr: I64 = np.ascontiguousarray(a["knn_indptr"], dtype=np.int64)
            self.knn_indices = np.ascontiguousarray(a["knn_indices"], dtype=np.int32)
            self.knn_sims: F32 = np.ascontiguousarray(a["knn_sims"], dtype=np.float32)
            self.seen_weights: F32 = np.ascontiguousarray(a["seen_weights"], dtype=np.float32)
            self.item_bias = np.ascontiguousarray(a["item_bias"], dtype=np.float32)
            self.global_bias = float(a["global_bias"].reshape(-1)[0])
        elif self.family == "segment":
            self.segment_scores: F32 = np.ascontiguousarray(a["segment_scores"], dtype=np.float32)
            self.user_segment = np.ascontiguousarray(a["user_segment"], dtype=np.int32)
            if self.segment_scores.shape != (len(keys), self.n_items) or len(
                self.user_segment
            ) != len(self.user_ids):
                raise ArtifactError("segment arrays do not match segment_keys, items and users")
        else:
            self.item_scores: F32 = np.ascontiguousarray(a["item_scores"], dtype=np.float32)

    # --- lookups ---------------------------------------------------------------------------

    def user_index(self, user_id: int) -> int | None:
        """Row of ``user_id`` in the model, or None for a user it has not seen."""
        i = int(np.searchsorted(self.user_ids, user_id))
        if i < len(self.user_ids) and int(self.user_ids[i]) == user_id:
            return i
        return None

    def item_index(self, movie_id: str) -> int | None:
        """Column of ``movie_id``, or None (the map is built on first use)."""
        if self._item_index is None:
            self._item_index = {str(m): i for i, m in enumerate(self.item_ids)}
        return self._item_index.get(movie_id)

    def ids(self, indices: npt.NDArray[np.integer[Any]]) -> list[str]:
        """Movie ids of item ``indices``, in order, as Python strings."""
        lst = self._item_list
        return [lst[i] for i in indices.tolist()]

    def seen(self, uidx: int) -> npt.NDArray[np.int32]:
        """Item indices the user had in training."""
        return self.seen_indices[self.seen_indptr[uidx] : self.seen_indptr[uidx + 1]]

    # --- scoring ---------------------------------------------------------------------------

    def scores(self, uidx: int) -> F32:
        """A fresh float32 score for every item for a known user (higher is better)."""
        if self.family in FACTOR_FAMILIES:
            s: F32 = self.item_factors @ self.user_factors[uidx]
            s += self.item_bias
            s += self.global_bias + self.user_bias[uidx]
            return s
        if self.family in GRAPH_FAMILIES:
            lo, hi = self.seen_indptr[uidx], self.seen_indptr[uidx + 1]
            rows = self.seen_indices[lo:hi]
            starts, ends = self.knn_indptr[rows], self.knn_indptr[rows + 1]
            lengths = ends - starts
            # Gather every neighbour entry of every seen item without a Python loop.
            offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
                int(lengths.sum())
            )
            weights = np.repeat(self.seen_weights[lo:hi], lengths) * self.knn_sims[offsets]
            summed = np.bincount(self.knn_indices[offsets], weights=weights, minlength=self.n_items)
            out: F32 = summed.astype(np.float32)
            out += self.item_bias
            out += self.global_bias
            return out
        if self.family == "segment":
            row: F32 = self.segment_scores[int(self.user_segment[uidx])].copy()
            return row
        return self.item_scores.copy()

    def score(self, user_id: int, movie_ids: Sequence[str]) -> F32:
        """Scores of ``movie_ids`` for ``user_id`` (NaN for unknown movies or users)."""
        out = np.full(len(movie_ids), np.nan, dtype=np.float32)
        uidx = self.user_index(user_id)
        if uidx is None and self.family != "popularity":
            return out  # (an unknown user's segment is not known here either)
        full = self.scores(uidx if uidx is not None else 0)
        for n, m in enumerate(movie_ids):
            j = self.item_index(m)
            if j is not None:
                out[n] = full[j]
        return out

    def top_k_indices(self, uidx: int, k: int, exclude_seen: bool = True) -> npt.NDArray[np.int64]:
        """The k best item indices for a known user, best first, seen items masked."""
        s = self.scores(uidx)  # a fresh array we own, so it may be modified in place
        if exclude_seen:
            s[self.seen(uidx)] = -np.inf
        k = min(k, self.n_items)
        if k <= 0:
            return np.empty(0, dtype=np.int64)
        # Negate in place (no second 27K allocation): argpartition then picks the k smallest,
        # and NaN (a broken factor) sorts last, so it can never displace a real score.
        np.negative(s, out=s)
        part = np.argpartition(s, k - 1)[:k] if k < self.n_items else np.arange(self.n_items)
        best: npt.NDArray[np.int64] = part[np.argsort(s[part], kind="stable")]
        finite: npt.NDArray[np.int64] = best[np.isfinite(s[best])]
        return finite

    def cold_start(self, segment: str | None = None) -> npt.NDArray[np.int32]:
        """The popularity list for ``segment`` when known, else the overall one."""
        if segment is not None and segment in self.segments:
            return self.segments[segment]
        return self.popular

    def recommend(
        self,
        user_id: int,
        k: int = 20,
        exclude_seen: bool = True,
        segment: str | None = None,
    ) -> tuple[list[str], bool]:
        """Top-k movie ids for ``user_id`` and whether the list is personalized.

        Unknown users get the segment (or overall) popularity list.  A known user whose model
        list is short (nearly everything seen) is topped up from popularity, so a loaded model
        never answers with an empty list.
        """
        uidx = self.user_index(user_id)
        if uidx is None:
            return self.ids(self.cold_start(segment)[:k]), False
        best = self.top_k_indices(uidx, k, exclude_seen)
        if len(best) < k:
            extra = self.popular[~np.isin(self.popular, best)]
            if exclude_seen:
                extra = extra[~np.isin(extra, self.seen(uidx))]
            best = np.concatenate([best, extra[: k - len(best)]])
            if len(best) == 0:  # the user has seen every popular movie: serve popularity anyway
                best = self.popular[:k].astype(np.int64)
        return self.ids(best), self.family not in NON_PERSONAL
