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
``rerank`` (two stage: candidate generators, then a LightGBM lambdarank ranker)
    the EASE graph arrays of ``ease``; the ALS factors ``user_factors`` / ``item_factors``
    (F may be 0); ``segment_scores`` + ``user_segment`` as ``segment``; ``item_genres``
    (float32 [I, G]); ``recent_order`` (int32): items by recency-weighted popularity, best
    first, and ``segment_order`` (int32 [S, N]) the same per segment; ``item_features``
    (float32 [I, Fi]) and ``user_features`` (float32 [U, Fu]); ``candidate_sizes`` (int64
    [4]: how many candidates EASE, recency, segment and genre affinity each propose) and
    ``genre_pool`` (int32, ascending): the popular items the genre generator picks from.  The
    ranker is the text file ``ranker.txt`` in LightGBM's own model format, evaluated here with
    NumPy (``TreeEnsemble``; exactly LightGBM's arithmetic), so serving needs no LightGBM.
    Features of a candidate, in this column order (``RERANK_CROSS`` then the item's then the
    user's): EASE score, ALS score, segment score, genre affinity, the candidate's rank by EASE
    and the EASE and ALS scores over the user's largest, ``item_features``, ``user_features``.
    The first item feature is a popularity, which weights the genre generator.  Items that
    are not candidates score below every candidate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.common.artifacts import Artifact, ArtifactError

FAMILIES: Final = ("svd", "als", "bpr", "knn", "ease", "popularity", "segment", "rerank")
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
    "rerank": (
        *_GRAPH_ARRAYS,
        "user_factors",
        "item_factors",
        "segment_scores",
        "user_segment",
        "item_genres",
        "recent_order",
        "segment_order",
        "item_features",
        "user_features",
        "candidate_sizes",
        "genre_pool",
    ),
}
RANKER_FILE: Final = "ranker.txt"
RERANK_CROSS: Final = (
    "ease",
    "als",
    "segment",
    "genre_affinity",
    "ease_rank",
    "ease_share",
    "als_share",
)
"""The per-(user, candidate) features of ``rerank``, before the item and user features."""
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


def _top_unblocked(scores: F32, blocked: npt.NDArray[np.bool_], n: int) -> npt.NDArray[np.int64]:
    """Indices of the (at most) n highest ``scores`` outside ``blocked``, in no order."""
    n = min(n, len(scores))
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    s = np.where(blocked, -np.inf, scores)
    part: npt.NDArray[np.int64] = np.argpartition(-s, n - 1)[:n] if n < len(s) else np.arange(n)
    out: npt.NDArray[np.int64] = part[np.isfinite(s[part])]
    return out


def _first_unblocked(
    order: npt.NDArray[np.int32], blocked: npt.NDArray[np.bool_], n: int
) -> npt.NDArray[np.int32]:
    """The first n items of ``order`` outside ``blocked``."""
    out: npt.NDArray[np.int32] = order[~blocked[order]][:n]
    return out


class TreeEnsemble:
    """A LightGBM model (its text format) evaluated with NumPy, all trees and rows at once.

    Numerical splits only (LightGBM: ``x <= threshold`` goes left; a NaN counts as 0 unless the
    split sends missing values to a default side).  Leaves loop to themselves, so every row
    walks ``depth`` steps through every tree; the tree outputs are summed in tree order in
    float64, as LightGBM does, so scores equal ``Booster.predict(raw_score=True)``.
    """

    def __init__(
        self,
        feature: npt.NDArray[np.int64],
        threshold: npt.NDArray[np.float64],
        left: npt.NDArray[np.int64],
        right: npt.NDArray[np.int64],
        value: npt.NDArray[np.float64],
        nan_left: npt.NDArray[np.bool_],
        roots: npt.NDArray[np.int64],
        depth: int,
        n_features: int,
    ) -> None:
        self.feature, self.threshold, self.left, self.right = feature, threshold, left, right
        self.value, self.nan_left, self.roots = value, nan_left, roots
        self.depth, self.n_features = depth, n_features
        # children[2 n] = left, children[2 n + 1] = right: one gather per step
        self.children = np.stack([left, right], axis=1).reshape(-1)

    @classmethod
    def from_lightgbm(cls, text: str) -> TreeEnsemble:
        """Parse a ``Booster.model_to_string()``; refuse what this evaluator cannot run exactly."""
        header, _, body = text.partition("\nTree=")
        head = dict(line.split("=", 1) for line in header.splitlines() if "=" in line)
        if head.get("num_tree_per_iteration", "1") != "1" or "max_feature_idx" not in head:
            raise ArtifactError("ranker: not a single-output LightGBM model")
        if "average_output" in header.split():
            raise ArtifactError("ranker: averaged (random forest) output is not supported")
        n_features = int(head["max_feature_idx"]) + 1
        blocks = ("Tree=" + body).split("end of trees")[0].split("\nTree=") if body else []
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        value: list[float] = []
        nan_left: list[bool] = []
        roots: list[int] = []
        depth = 0
        for block in blocks:
            t = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if t.get("num_cat", "0") != "0" or t.get("is_linear", "0") != "0":
                raise ArtifactError("ranker: categorical or linear trees are not supported")
            n_leaves = int(t["num_leaves"])
            base = len(feature)
            n_inner = n_leaves - 1
            leaf_values = [float(v) for v in t["leaf_value"].split()]
            if n_inner == 0:  # a constant tree: its root is its only leaf
                roots.append(base)
                feature.append(0)
                threshold.append(np.inf)
                left.append(base)
                right.append(base)
                value.append(leaf_values[0])
                nan_left.append(True)
                continue
            kinds = [int(v) for v in t["decision_type"].split()]
            if any(k & 1 for k in kinds) or any((k >> 2) & 3 == 1 for k in kinds):
                raise ArtifactError("ranker: categorical or zero-as-missing splits unsupported")

            def node(child: int, base: int = base, n_inner: int = n_inner) -> int:
                """Global node of a child: inner nodes first, then leaves (~leaf)."""
                return base + child if child >= 0 else base + n_inner + ~child

            feature += [int(v) for v in t["split_feature"].split()]
            threshold += [float(v) for v in t["threshold"].split()]
            left += [node(int(v)) for v in t["left_child"].split()]
            right += [node(int(v)) for v in t["right_child"].split()]
            value += [0.0] * n_inner
            # NaN goes to the default side only for "NaN" missing type; else it is 0 (<= thr?)
            nan_left += [
                bool(k & 2) if (k >> 2) & 3 == 2 else float(th) >= 0.0
                for k, th in zip(kinds, t["threshold"].split(), strict=True)
            ]
            leaves = list(range(base + n_inner, base + n_inner + n_leaves))
            feature += [0] * n_leaves
            threshold += [np.inf] * n_leaves
            left += leaves
            right += leaves
            value += leaf_values
            nan_left += [True] * n_leaves
            roots.append(base)
            depth = max(depth, _tree_depth(left[base:], right[base:], base))
        as_i = np.asarray
        return cls(
            as_i(feature, dtype=np.int64),
            as_i(threshold, dtype=np.float64),
            as_i(left, dtype=np.int64),
            as_i(right, dtype=np.int64),
            as_i(value, dtype=np.float64),
            as_i(nan_left, dtype=bool),
            as_i(roots, dtype=np.int64),
            depth,
            n_features,
        )

    def predict(self, x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Raw scores of the rows of ``x`` (rows × at least ``n_features`` columns)."""
        n = len(x)
        if n == 0 or len(self.roots) == 0:
            return np.zeros(n, dtype=np.float64)
        if n == 1:  # two rows keep the final sum's rows apart (see below)
            x = np.concatenate([x, x])
        rows = len(x)
        flat = np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
        offset = np.arange(rows, dtype=np.int64) * x.shape[1]
        # trees × rows, so the final sum runs down axis 0: NumPy adds those rows one after the
        # other in tree order, the float64 running sum LightGBM computes (a sum along the
        # contiguous axis would be pairwise, and a cumsum along either axis costs ~40x more)
        node = np.repeat(self.roots, rows).reshape(len(self.roots), rows)
        has_nan = bool(np.isnan(flat).any())
        for _ in range(self.depth):
            at = self.feature.take(node)
            at += offset
            v = flat.take(at)
            right = v > self.threshold.take(node)
            if has_nan:
                right = np.where(np.isnan(v), ~self.nan_left.take(node), right)
            node <<= 1
            node += right
            node = self.children.take(node)
        out: npt.NDArray[np.float64] = self.value.take(node).sum(axis=0)[:n]
        return out


def _tree_depth(left: list[int], right: list[int], base: int) -> int:
    """Longest root-to-leaf path of one tree (its nodes from ``base``; leaves loop to self)."""
    depth, frontier = 0, [base]
    while frontier:
        nxt = [c for n in frontier for c in (left[n - base], right[n - base]) if c != n]
        frontier, depth = nxt, depth + 1 if nxt else depth
    return depth


def graph_scores(
    seen: npt.NDArray[np.int32],
    seen_weights: F32,
    indptr: I64,
    indices: npt.NDArray[np.int32],
    sims: F32,
    item_bias: F32,
    global_bias: float,
) -> F32:
    """Σ over the seen items j of w_j · sim(j, i), plus the biases: a graph family's scores."""
    return _graph_scores(seen, seen_weights, indptr, indices, sims, item_bias, global_bias)[0]


def _graph_scores(
    seen: npt.NDArray[np.int32],
    seen_weights: F32,
    indptr: I64,
    indices: npt.NDArray[np.int32],
    sims: F32,
    item_bias: F32,
    global_bias: float,
) -> tuple[F32, npt.NDArray[np.int32]]:
    """``graph_scores`` and the neighbour items it summed over (repeats kept)."""
    starts, ends = indptr[seen], indptr[seen + 1]
    lengths = ends - starts
    # Gather every neighbour entry of every seen item without a Python loop.
    offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(
        int(lengths.sum())
    )
    neighbours = indices[offsets]
    weights = np.repeat(seen_weights, lengths) * sims[offsets]
    summed = np.bincount(neighbours, weights=weights, minlength=len(item_bias))
    out: F32 = summed.astype(np.float32)
    out += item_bias
    out += global_bias
    return out, neighbours


class Candidates:
    """``rerank``'s first stage over its arrays: candidate items of a user and their features."""

    def __init__(self, a: dict[str, npt.NDArray[Any]]) -> None:
        """Keep the generators' arrays and feature tables; refuse inconsistent shapes."""
        c = np.ascontiguousarray
        self.seen_indptr: I64 = c(a["seen_indptr"], dtype=np.int64)
        self.seen_indices = c(a["seen_indices"], dtype=np.int32)
        self.knn_indptr: I64 = c(a["knn_indptr"], dtype=np.int64)
        self.knn_indices = c(a["knn_indices"], dtype=np.int32)
        self.knn_sims: F32 = c(a["knn_sims"], dtype=np.float32)
        self.seen_weights: F32 = c(a["seen_weights"], dtype=np.float32)
        self.item_bias: F32 = c(a["item_bias"], dtype=np.float32)
        self.global_bias = float(a["global_bias"].reshape(-1)[0])
        self.user_factors: F32 = c(a["user_factors"], dtype=np.float32)
        self.item_factors: F32 = c(a["item_factors"], dtype=np.float32)
        self.segment_scores: F32 = c(a["segment_scores"], dtype=np.float32)
        self.user_segment = c(a["user_segment"], dtype=np.int32)
        self.item_genres: F32 = c(a["item_genres"], dtype=np.float32)
        self.genre_counts: F32 = np.maximum(self.item_genres.sum(axis=1), 1.0)
        self.recent_order = c(a["recent_order"], dtype=np.int32)
        self.segment_order = c(a["segment_order"], dtype=np.int32)
        self.genre_pool = c(a["genre_pool"], dtype=np.int32)
        self.item_features: F32 = c(a["item_features"], dtype=np.float32)
        self.user_features: F32 = c(a["user_features"], dtype=np.float32)
        sizes = np.asarray(a["candidate_sizes"], dtype=np.int64).reshape(-1)
        n_u, n_i = len(a["user_ids"]), len(a["item_ids"])
        if (
            len(sizes) != 4
            or self.seen_indptr.shape != (n_u + 1,)
            or self.seen_weights.shape != self.seen_indices.shape
            or self.knn_indptr.shape != (n_i + 1,)
            or self.item_bias.shape != (n_i,)
            or self.user_factors.shape[0] != n_u
            or self.item_factors.shape != (n_i, self.user_factors.shape[1])
            or self.segment_scores.ndim != 2
            or self.segment_scores.shape[1] != n_i
            or self.user_segment.shape != (n_u,)
            or self.item_genres.shape[0] != n_i
            or self.item_features.ndim != 2
            or self.item_features.shape[0] != n_i
            or self.item_features.shape[1] < 1
            or self.user_features.ndim != 2
            or self.user_features.shape[0] != n_u
            or self.segment_order.ndim != 2
            or self.segment_order.shape[0] != self.segment_scores.shape[0]
        ):
            raise ArtifactError("rerank arrays do not match each other, items and users")
        n_seg = self.segment_scores.shape[0]
        for name, idx, bound in (
            ("knn_indices", self.knn_indices, n_i),
            ("recent_order", self.recent_order, n_i),
            ("segment_order", self.segment_order, n_i),
            ("user_segment", self.user_segment, n_seg),
            ("genre_pool", self.genre_pool, n_i),
        ):
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= bound):
                raise ArtifactError(f"{name} has indices outside [0, {bound})")
        self.n_items = n_i
        self.sizes = [int(v) for v in sizes]
        self.n_features = (
            len(RERANK_CROSS) + self.item_features.shape[1] + self.user_features.shape[1]
        )
        # Items by EASE's score for a user it has no neighbour for (the bias), best first: the
        # top EASE items of a user are among their neighbours and the head of this order, so
        # they are found without ranking the whole catalog.
        self.bias_order = np.argsort(-self.item_bias, kind="stable")
        # the genre generator's pool, gathered once rather than per request
        self.pool_genres: F32 = c(self.item_genres[self.genre_pool])
        self.pool_counts: F32 = c(self.genre_counts[self.genre_pool])
        self.pool_popularity: F32 = c(self.item_features[self.genre_pool, 0])

    def _top_ease(
        self,
        ease: F32,
        seen: npt.NDArray[np.int32],
        neighbours: npt.NDArray[np.int32],
        blocked: npt.NDArray[np.bool_],
        n: int,
    ) -> npt.NDArray[np.int64]:
        """The n best unseen items by EASE score (in no order), ranking a short list only.

        An item no seen item links to scores its bias, so every such item outside the first
        n + |seen| + |neighbours| of ``bias_order`` is beaten by n unseen items inside it.
        """
        head = n + len(seen) + len(neighbours)
        if head >= self.n_items:
            return _top_unblocked(ease, blocked, n)
        short = np.zeros(self.n_items, dtype=bool)
        short[neighbours] = True
        short[self.bias_order[:head]] = True
        short[seen] = False
        sub = np.flatnonzero(short)
        return sub[_top_unblocked(ease[sub], np.zeros(len(sub), dtype=bool), n)]

    def ease(self, uidx: int) -> tuple[npt.NDArray[np.int32], F32, npt.NDArray[np.int32]]:
        """Known user ``uidx``'s seen items, EASE scores and the neighbour items summed over."""
        lo, hi = int(self.seen_indptr[uidx]), int(self.seen_indptr[uidx + 1])
        seen = self.seen_indices[lo:hi]
        ease, neighbours = _graph_scores(
            seen,
            self.seen_weights[lo:hi],
            self.knn_indptr,
            self.knn_indices,
            self.knn_sims,
            self.item_bias,
            self.global_bias,
        )
        return seen, ease, neighbours

    def __call__(self, uidx: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """The candidate items of known user ``uidx`` (none seen, ascending) and their features.

        The union of the top items by EASE score, by recency-weighted popularity, by the
        user's segment's popularity and by genre affinity × popularity; features in the
        column order of the module docstring (float64, as LightGBM reads them).
        """
        n_ease, n_recent, n_segment, n_genre = self.sizes
        seen, ease, neighbours = self.ease(uidx)
        blocked = np.zeros(self.n_items, dtype=bool)
        blocked[seen] = True
        profile = self.item_genres[seen].sum(axis=0) / max(len(seen), 1)
        # genre affinity over the pool of popular items only: a whole 27K catalog would cost
        # more than everything else (and the generator weights affinity by popularity anyway)
        pool_affinity = (self.pool_genres @ profile) / self.pool_counts
        by_genre = _top_unblocked(
            pool_affinity * self.pool_popularity, blocked[self.genre_pool], n_genre
        )
        seg = int(self.user_segment[uidx])
        picked = np.concatenate(
            [
                self._top_ease(ease, seen, neighbours, blocked, n_ease),
                _first_unblocked(self.recent_order, blocked, n_recent),
                _first_unblocked(self.segment_order[seg], blocked, n_segment),
                self.genre_pool[by_genre],
            ]
        )
        picked.sort()
        cands = picked[np.r_[True, picked[1:] != picked[:-1]]] if len(picked) else picked
        cands = cands.astype(np.int64)
        # every feature of every candidate straight into one preallocated matrix
        feats = np.empty((len(cands), self.n_features), dtype=np.float64)
        feats[:, 0] = ease[cands]
        feats[:, 1] = self.item_factors[cands] @ self.user_factors[uidx]
        feats[:, 2] = self.segment_scores[seg, cands]
        feats[:, 3] = (self.item_genres[cands] @ profile) / self.genre_counts[cands]
        # scale-free versions: the generators' scores grow with the data they were fitted on,
        # and the ranker is trained on fits to less data than the one it serves with
        by_ease = np.argsort(-feats[:, 0], kind="stable")
        feats[by_ease, 4] = np.arange(len(cands))
        feats[:, 5] = feats[:, 0] / max(float(np.abs(feats[:, 0]).max(initial=0.0)), 1e-12)
        feats[:, 6] = feats[:, 1] / max(float(np.abs(feats[:, 1]).max(initial=0.0)), 1e-12)
        n_cross, n_item = len(RERANK_CROSS), self.item_features.shape[1]
        feats[:, n_cross : n_cross + n_item] = self.item_features[cands]
        feats[:, n_cross + n_item :] = self.user_features[uidx]
        return cands, feats


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
        if self.family == "rerank":
            self.stage_one = Candidates(a)
            if RANKER_FILE not in artifact.texts:
                raise ArtifactError(f"rerank artifact lacks {RANKER_FILE}")
            self.ranker = TreeEnsemble.from_lightgbm(artifact.texts[RANKER_FILE])
            if self.ranker.n_features > self.stage_one.n_features:
                raise ArtifactError(
                    f"the ranker reads {self.ranker.n_features} features; the artifact has "
                    f"{self.stage_one.n_features}"
                )
        elif self.family in FACTOR_FAMILIES:
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
        if self.family == "rerank":
            cands, feats = self.stage_one(uidx)
            ranked = self.ranker.predict(feats)
            low = float(ranked.min(initial=0.0)) - 1.0
            full: F32 = np.full(self.n_items, low, dtype=np.float32)
            full[cands] = ranked
            return full
        if self.family in GRAPH_FAMILIES:
            return graph_scores(
                self.seen_indices[self.seen_indptr[uidx] : self.seen_indptr[uidx + 1]],
                self.seen_weights[self.seen_indptr[uidx] : self.seen_indptr[uidx + 1]],
                self.knn_indptr,
                self.knn_indices,
                self.knn_sims,
                self.item_bias,
                self.global_bias,
            )
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
        if self.family == "rerank":  # only candidates are ranked (and none of them is seen)
            cands, feats = self.stage_one(uidx)
            # ties (e.g. a ranker without trees) fall back to the EASE score, then the index
            order = np.lexsort((cands, -feats[:, 0], -self.ranker.predict(feats)))
            top: npt.NDArray[np.int64] = cands[order[: max(k, 0)]]
            return top
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
