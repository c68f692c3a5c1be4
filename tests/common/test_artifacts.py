"""Model artifacts and the registry: round trip, content addressing, tamper refusal, channels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.common.artifacts import (
    ARRAYS_FILE,
    MANIFEST_FILE,
    ArtifactError,
    Registry,
    load_artifact,
    write_artifact,
)


def _arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "item_factors": rng.normal(size=(50, 4)).astype(np.float32),
        "item_ids": np.array([f"movie+{i}+2000" for i in range(50)]),
        "user_ids": np.arange(1, 11, dtype=np.int64),
    }


def _write(tmp: Path, seed: int = 0, name: str = "svd", created: str | None = None) -> Path:
    out = tmp / f"art-{name}-{seed}-{created}"
    write_artifact(
        out,
        name=name,
        family="svd",
        arrays=_arrays(seed),
        params={"factors": 4, "seed": seed},
        snapshot={"content_hash": "abc", "time_range": {"min_ns": 0, "max_ns": 1}},
        metrics={"rmse": 0.9},
        git_sha="deadbeef",
        created=created,
    )
    return out


def test_round_trip_preserves_arrays_and_provenance(tmp_path: Path) -> None:
    path = _write(tmp_path)
    art = load_artifact(path)
    for key, value in _arrays().items():
        np.testing.assert_array_equal(art.arrays[key], value)
    m = art.manifest
    assert (m.name, m.family, m.git_sha) == ("svd", "svd", "deadbeef")
    assert m.snapshot["content_hash"] == "abc" and m.metrics == {"rmse": 0.9}
    assert set(m.files) == {ARRAYS_FILE} and len(m.files[ARRAYS_FILE]) == 64


def test_version_is_content_addressed(tmp_path: Path) -> None:
    a = load_artifact(_write(tmp_path, 0, created="2026-01-01T00:00:00+00:00")).manifest
    b = load_artifact(_write(tmp_path, 0, created="2026-06-01T00:00:00+00:00")).manifest
    c = load_artifact(_write(tmp_path, 1)).manifest
    assert a.version == b.version != c.version
    assert a.files == b.files  # same arrays give the same bytes, whatever the wall clock


def test_tampered_array_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    data = bytearray((path / ARRAYS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (path / ARRAYS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 mismatch"):
        load_artifact(path)


def test_manifest_listing_extra_files_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path)
    doc = json.loads((path / MANIFEST_FILE).read_text())
    doc["files"]["evil.pkl"] = "0" * 64
    (path / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="unexpected files"):
        load_artifact(path)


def test_object_arrays_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="pickle"):
        write_artifact(
            tmp_path / "x",
            name="x",
            family="svd",
            arrays={"bad": np.array([{"a": 1}], dtype=object)},
            params={},
            snapshot={},
        )


def test_pickled_npz_payload_is_not_loaded(tmp_path: Path) -> None:
    """Even with a matching hash, an object array inside the npz must not be unpickled."""
    path = _write(tmp_path)
    np.savez(path / ARRAYS_FILE, evil=np.array([object()], dtype=object))
    doc = json.loads((path / MANIFEST_FILE).read_text())
    import hashlib

    doc["files"][ARRAYS_FILE] = hashlib.sha256((path / ARRAYS_FILE).read_bytes()).hexdigest()
    (path / MANIFEST_FILE).write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(path)


def test_registry_register_is_idempotent_and_channels_move(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    m1, added1 = reg.register(_write(tmp_path, 0), channel="canary")
    again, added_again = reg.register(_write(tmp_path, 0), channel="canary")
    assert added1 and not added_again and again.version == m1.version
    assert [m.version for m in reg.versions("svd")] == [m1.version]
    assert reg.promote("svd") == m1.version
    assert reg.channel("svd", "stable") == m1.version

    m2, _ = reg.register(_write(tmp_path, 1), channel="canary")
    reg.promote("svd", m2.version)
    assert reg.channel("svd", "stable") == m2.version
    assert reg.load("svd", "stable").manifest.version == m2.version
    assert reg.rollback("svd") == m1.version
    assert reg.channel("svd", "stable") == m1.version
    with pytest.raises(ArtifactError, match="no earlier version"):
        reg.rollback("svd")


def test_registry_rejects_unknown_versions_channels_and_paths(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "models")
    reg.register(_write(tmp_path, 0))
    with pytest.raises(ArtifactError):
        reg.set_channel("svd", "stable", "nope")
    with pytest.raises(ArtifactError, match="unknown channel"):
        reg.channel("svd", "prod")
    with pytest.raises(ArtifactError, match="invalid"):
        reg.path("../etc", "x")
    with pytest.raises(ArtifactError, match="points at no version"):
        reg.resolve("svd", "stable")
