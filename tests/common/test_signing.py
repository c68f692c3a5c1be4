"""Optional model authenticity: HMAC-signed manifests in the registry."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.common.artifacts import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    Manifest,
    Registry,
    SignatureError,
    write_artifact,
)
from services.common.settings import ModelSigningSettings

KEY = b"test-signing-key"


def _artifact(tmp_path: Path, seed: int) -> Path:
    out = tmp_path / f"art-{seed}"
    write_artifact(
        out,
        name="m",
        family="svd",
        arrays={"w": np.arange(4, dtype=np.float32) + seed},
        params={"seed": seed},
        snapshot={"content_hash": "x"},
    )
    return out


def _signed(tmp_path: Path, seed: int = 0) -> tuple[Registry, Manifest]:
    reg = Registry(tmp_path / "models", signing_key=KEY)
    m, _ = reg.register(_artifact(tmp_path, seed), channel="stable")
    return reg, m


def test_a_signing_registry_signs_and_loads_what_it_registers(tmp_path: Path) -> None:
    reg, m = _signed(tmp_path)
    sig = (reg.path("m", m.version) / SIGNATURE_FILE).read_text()
    assert sig.startswith("hmac-sha256:") and len(sig.strip()) == len("hmac-sha256:") + 64
    assert reg.load("m", "stable").manifest.version == m.version
    # Without a key nothing is checked: signing is opt-in, old registries keep working.
    assert Registry(reg.root).load("m", "stable").manifest.version == m.version


def test_unsigned_versions_are_refused_when_a_key_is_set(tmp_path: Path) -> None:
    plain = Registry(tmp_path / "models")
    plain.register(_artifact(tmp_path, 0), channel="stable")
    with pytest.raises(SignatureError, match="not signed"):
        Registry(plain.root, signing_key=KEY).load("m", "stable")


def test_a_wrong_key_or_an_edited_manifest_is_refused(tmp_path: Path) -> None:
    reg, m = _signed(tmp_path)
    with pytest.raises(SignatureError, match="does not match"):
        Registry(reg.root, signing_key=b"another key").load("m", "stable")
    manifest = reg.path("m", m.version) / MANIFEST_FILE
    doc = json.loads(manifest.read_text())
    doc["metrics"] = {"ndcg@20": 0.99}  # a forged claim, hashes untouched
    manifest.write_text(json.dumps(doc))
    with pytest.raises(SignatureError, match="does not match"):
        reg.load("m", "stable")


def test_a_signed_version_copied_under_another_version_is_refused(tmp_path: Path) -> None:
    reg, m1 = _signed(tmp_path, 0)
    m2, _ = reg.register(_artifact(tmp_path, 1))
    # Replace version 2's folder with a copy of version 1 (valid signature, wrong place).
    shutil.rmtree(reg.path("m", m2.version))
    shutil.copytree(reg.path("m", m1.version), reg.path("m", m2.version))
    with pytest.raises(SignatureError, match="sits at"):
        reg.load("m", m2.version)


def test_registering_again_with_a_key_signs_an_unsigned_version(tmp_path: Path) -> None:
    art = _artifact(tmp_path, 0)
    plain = Registry(tmp_path / "models")
    m, _ = plain.register(art, channel="stable")
    assert not (plain.path("m", m.version) / SIGNATURE_FILE).exists()
    signing = Registry(plain.root, signing_key=KEY)
    _, added = signing.register(art)
    assert not added
    assert signing.load("m", "stable").manifest.version == m.version


def test_key_comes_from_env_or_a_mounted_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MARQUEE_MODEL_SIGNING_KEY", raising=False)
    monkeypatch.delenv("MARQUEE_MODEL_SIGNING_KEY_FILE", raising=False)
    assert ModelSigningSettings().key() is None
    monkeypatch.setenv("MARQUEE_MODEL_SIGNING_KEY", "from-env")
    assert ModelSigningSettings().key() == b"from-env"
    secret = tmp_path / "key"
    secret.write_bytes(b"from-file\n")
    monkeypatch.setenv("MARQUEE_MODEL_SIGNING_KEY_FILE", str(secret))
    assert ModelSigningSettings().key() == b"from-file"
    secret.write_bytes(b"\n")
    with pytest.raises(ValueError, match="empty"):
        ModelSigningSettings().key()
    monkeypatch.setenv("MARQUEE_MODEL_SIGNING_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="cannot read"):
        ModelSigningSettings().key()
