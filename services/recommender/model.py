"""Model lifecycle: load a verified artifact from the registry and hot-swap it under load.

``ModelHolder.current`` is a single reference: a request reads it once and finishes on that
model even when a swap happens meanwhile, so a swap never fails a request.  A new version is
loaded, checked and warmed in the background, and only then assigned; a load that fails (a
tampered file, a broken array) leaves the old model serving and is logged and counted.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from services.common.artifacts import CHANNELS, ArtifactError, Registry, SignatureError
from services.common.scoring import FACTOR_FAMILIES, GRAPH_FAMILIES, Scorer
from services.common.service import TEXT
from services.recommender.cache import ListCache
from services.recommender.metrics import RecommenderMetrics

log = logging.getLogger("marquee.recommender.model")

Kind = Literal["personalized", "popularity", "cold_start", "fallback"]
"""How an answer was made (``X-Recommendation-Kind``)."""

# An id with a comma or whitespace would break the one-line, comma-separated answer.
_BAD_ID = re.compile(r"[,\s]")


@dataclass(frozen=True)
class LoadedModel:
    """A verified, warmed scorer plus its provenance, ready to answer requests."""

    scorer: Scorer
    name: str
    version: str
    family: str
    snapshot_hash: str
    git_sha: str
    loaded_at: float = field(default_factory=time.time)
    lists: ListCache[tuple[list[str], Kind, str]] = field(default_factory=lambda: ListCache(0))
    """Known users' answers (items, kind, line) under this model; a new model starts empty."""

    @cached_property  # built once per model, not per request (works on a frozen dataclass)
    def headers(self) -> dict[str, str]:
        """Provenance response headers, the same on every answer of this model."""
        return {
            "X-Model-Name": self.name,
            "X-Model-Version": self.version,
            "X-Model-Family": self.family,
            "X-Model-Snapshot": self.snapshot_hash,
            "X-Model-Git-Sha": self.git_sha,
        }

    @cached_property
    def answer_headers(self) -> dict[str, list[tuple[str, str]]]:
        """Every header of an answer of each kind (content type, provenance, kind), built once."""
        base = [("Content-Type", TEXT), *self.headers.items()]
        kinds: tuple[Kind, ...] = ("personalized", "popularity", "cold_start", "fallback")
        return {kind: [*base, ("X-Recommendation-Kind", kind)] for kind in kinds}

    @cached_property
    def log_fields(self) -> dict[str, str]:
        """Provenance fields for the JSON access log."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "snapshot_hash": self.snapshot_hash,
            "git_sha": self.git_sha,
        }


def _in_range(idx: np.ndarray[Any, Any], n: int, what: str) -> None:
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ArtifactError(f"{what} has indices outside [0, {n})")


def check_scorer(s: Scorer) -> None:
    """Refuse a model whose arrays disagree with each other or could break the answer format."""
    n_users, n_items = len(s.user_ids), s.n_items
    if n_items == 0 or len(s.popular) == 0:
        raise ArtifactError("model has no items or no popularity list")
    if len(s.seen_indptr) != n_users + 1 or int(s.seen_indptr[-1]) != len(s.seen_indices):
        raise ArtifactError("seen_indptr does not match user_ids / seen_indices")
    if n_users and np.any(np.diff(s.seen_indptr) < 0):
        raise ArtifactError("seen_indptr is not monotonic")
    _in_range(s.seen_indices, n_items, "seen_indices")
    _in_range(s.popular, n_items, "popular")
    for key, lst in s.segments.items():
        _in_range(lst, n_items, f"segment {key!r}")
    if s.family in FACTOR_FAMILIES:
        u, i = s.user_factors.shape, s.item_factors.shape
        if u[0] != n_users or i[0] != n_items or u[1] != i[1]:
            raise ArtifactError(
                f"factor shapes {u} / {i} do not match {n_users} users, {n_items} items"
            )
        if len(s.user_bias) != n_users or len(s.item_bias) != n_items:
            raise ArtifactError("bias lengths do not match users / items")
    elif s.family in GRAPH_FAMILIES:
        if len(s.knn_indptr) != n_items + 1 or int(s.knn_indptr[-1]) != len(s.knn_indices):
            raise ArtifactError("knn_indptr does not match item_ids / knn_indices")
        if len(s.knn_sims) != len(s.knn_indices) or len(s.seen_weights) != len(s.seen_indices):
            raise ArtifactError("knn_sims / seen_weights lengths do not match their indices")
        if len(s.item_bias) != n_items:
            raise ArtifactError("item_bias length does not match items")
        _in_range(s.knn_indices, n_items, "knn_indices")
    elif s.family in ("segment", "rerank"):
        pass  # Scorer checks these families' arrays against items, users and each other
    elif len(s.item_scores) != n_items:
        raise ArtifactError("item_scores length does not match items")
    ids = s.item_ids.astype(str)
    if any(not m or _BAD_ID.search(m) for m in ids.tolist()):
        raise ArtifactError("an item id is empty or contains a comma or whitespace")
    if len(np.unique(ids)) != n_items:
        raise ArtifactError("item ids are not distinct")


def load_model(registry: Registry, name: str, ref: str, list_cache_size: int = 0) -> LoadedModel:
    """Load, verify (sha256 and array consistency) and warm the model ``ref`` points at.

    ``list_cache_size``: known users whose answers the model keeps (at most its known users).
    """
    artifact = registry.load(name, ref)
    m = artifact.manifest
    if m.name != name:
        raise ArtifactError(f"artifact is named {m.name!r}, expected {name!r}")
    scorer = Scorer(artifact)
    check_scorer(scorer)
    # Warm up (and smoke-test) both paths before any request can reach this model.
    if len(scorer.user_ids):
        scorer.recommend(int(scorer.user_ids[0]), 20)
    scorer.recommend(-1, 20)
    snapshot = m.snapshot.get("content_hash") if isinstance(m.snapshot, dict) else None
    return LoadedModel(
        scorer=scorer,
        name=m.name,
        version=m.version,
        family=m.family,
        snapshot_hash=str(snapshot or "unknown"),
        git_sha=str(m.git_sha or "unknown"),
        lists=ListCache(min(list_cache_size, len(scorer.user_ids))),
    )


def missing_model(registry: Registry, name: str, ref: str) -> str | None:
    """Why ``name``/``ref`` cannot be served from ``registry`` now (one line), or None.

    Names the path and the model it looked for, so a typo is not mistaken for a model that is
    still being trained.
    """
    root = registry.root.resolve()
    if not root.is_dir():
        return f"model registry {root} does not exist (--registry)"
    names = registry.names()
    if name not in names:
        has = ", ".join(names) if names else "no models"
        return f"no model named {name!r} in registry {root} (it has {has}; --model)"
    try:
        version = registry.channel(name, ref) if ref in CHANNELS else ref
    except (OSError, ValueError, ArtifactError) as exc:
        return f"cannot read the {ref!r} pointer of {name!r} in {root}: {exc}"
    if version is None:
        return f"model {name!r} in {root} has no {ref!r} version yet (--ref)"
    if not (root / name / version).is_dir():
        return f"model {name!r} in {root} has no version {version!r} (--ref)"
    return None


class ModelHolder:
    """Holds the serving model and swaps in new versions of the watched channel or pin."""

    def __init__(
        self,
        registry: Registry,
        name: str,
        ref: str,
        metrics: RecommenderMetrics,
        *,
        poll_interval_s: float = 2.0,
        load_retry_s: float = 30.0,
        list_cache_size: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.name = name
        self.ref = ref
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self.load_retry_s = load_retry_s
        self.list_cache_size = list_cache_size
        self._clock = clock
        self._current: LoadedModel | None = None
        self._failed: dict[str, float] = {}  # version -> when its load last failed
        self._load_lock = threading.Lock()  # one load at a time per process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._publish = False  # gauges only from serving processes, never a preloading master

    @property
    def current(self) -> LoadedModel | None:
        """The serving model (read once per request), or None before the first load."""
        return self._current

    @property
    def ready(self) -> bool:
        """True once a model is loaded; it then stays loaded."""
        return self._current is not None

    def target_version(self) -> str | None:
        """The version the channel pointer names now (or the pinned version)."""
        if self.ref in CHANNELS:
            return self.registry.channel(self.name, self.ref)
        return self.ref

    def refresh(self) -> bool:
        """Load and swap in the target version when it differs; True when a swap happened."""
        with self._load_lock:
            try:
                target = self.target_version()
            except (OSError, ValueError, ArtifactError) as exc:
                self._failure("pointer", None, exc)
                return False
            if target is None:
                if self._current is None:
                    log.warning("no model yet", extra={"model_name": self.name, "ref": self.ref})
                return False
            current = self._current
            if current is not None and current.version == target:
                return False
            failed_at = self._failed.get(target)
            if failed_at is not None and self._clock() - failed_at < self.load_retry_s:
                return False
            started = time.perf_counter()
            try:
                model = load_model(self.registry, self.name, target, self.list_cache_size)
            except SignatureError as exc:  # unsigned or mis-signed: not ours, never served
                self._failure("signature", target, exc)
                return False
            except ArtifactError as exc:
                self._failure("verification", target, exc)
                return False
            except Exception as exc:  # any broken file must leave the old model serving
                self._failure("error", target, exc)
                return False
            self._failed.pop(target, None)
            self._current = model  # the swap: one reference assignment, atomic under the GIL
            self.metrics.model_loads.labels(model.version).inc()
            if self._publish:
                self._publish_info(previous=current)
            log.info(
                "model swapped in",
                extra={
                    **model.log_fields,
                    "family": model.family,
                    "previous_version": current.version if current else None,
                    "load_seconds": round(time.perf_counter() - started, 3),
                    "users": len(model.scorer.user_ids),
                    "items": model.scorer.n_items,
                },
            )
            return True

    def _failure(self, reason: str, version: str | None, exc: Exception) -> None:
        if version is not None:
            self._failed[version] = self._clock()
        self.metrics.model_load_failures.labels(reason).inc()
        log.error(
            "model load failed; keeping the current model",
            extra={
                "model_name": self.name,
                "ref": self.ref,
                "target_version": version,
                "reason": reason,
                "error": f"{type(exc).__name__}: {exc}",
                "serving_version": self._current.version if self._current else None,
            },
        )

    def _publish_info(self, previous: LoadedModel | None) -> None:
        m = self.metrics
        if previous is not None:
            m.model_info.labels(*self._info_labels(previous)).set(0)
            m.model_workers.labels(previous.version).set(0)
        current = self._current
        if current is not None:
            m.model_info.labels(*self._info_labels(current)).set(1)
            m.model_workers.labels(current.version).set(1)
            m.model_loaded_timestamp.set(current.loaded_at)

    @staticmethod
    def _info_labels(model: LoadedModel) -> tuple[str, str, str, str, str]:
        return model.name, model.version, model.family, model.snapshot_hash, model.git_sha

    def start(self) -> None:
        """Begin serving from this process: publish model info, start the pointer watcher."""
        self._publish = True
        self._publish_info(previous=None)
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the watcher thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any surprise
                log.exception("model watcher iteration failed")
