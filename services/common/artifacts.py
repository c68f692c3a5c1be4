"""The model artifact format and the filesystem model registry.  No pickle, ever.

An artifact is a folder holding ``arrays.npz`` (plain numeric and string arrays, written
deterministically, loaded with ``allow_pickle=False``), optionally text files a model library
writes in its own format (e.g. ``ranker.txt``, a LightGBM model), and ``manifest.json``
(provenance and the sha256 of every file).  Loading recomputes every hash and refuses a
mismatch.

The registry is ``<root>/<name>/<version>/`` with channel pointers
``<root>/<name>/channels/<channel>.json`` (``stable``, ``canary``) replaced atomically; each
pointer keeps its history so ``rollback`` can return to the version before.

Authenticity is optional: a registry given a signing key writes ``manifest.sig`` (an
HMAC-SHA256 of the manifest's bytes, which pin every file's sha256) beside each version it
registers, and refuses to load a version whose signature is missing or wrong.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import io
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.common.fsio import atomic_write_text, fsync_dir, fsync_files

FORMAT_VERSION: Final = 1
ARRAYS_FILE: Final = "arrays.npz"
MANIFEST_FILE: Final = "manifest.json"
SIGNATURE_FILE: Final = "manifest.sig"
SIGNATURE_ALG: Final = "hmac-sha256"
CHANNELS: Final = ("stable", "canary")
_ZIP_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
TEXT_FILE: Final = re.compile(r"^[a-z0-9_]+\.txt$")
"""Names a text file of an artifact may have (no paths, no manifest look-alikes)."""


class ArtifactError(Exception):
    """An artifact is missing, malformed, or does not match its manifest."""


class SignatureError(ArtifactError):
    """A registry version is unsigned, or its signature does not match the signing key."""


@dataclass(frozen=True)
class Manifest:
    """Everything needed to trace a model back to its data, code and parameters."""

    name: str
    family: str
    version: str
    created: str
    git_sha: str
    snapshot: dict[str, Any]
    params: dict[str, Any]
    metrics: dict[str, Any]
    files: dict[str, str]
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Canonical JSON text of the manifest."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        """Parse a manifest, rejecting unknown format versions and missing fields."""
        try:
            data = json.loads(text)
            if data.get("format_version") != FORMAT_VERSION:
                raise ArtifactError(f"unsupported format_version {data.get('format_version')!r}")
            return cls(**data)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"malformed manifest: {exc}") from exc


@dataclass(frozen=True)
class Artifact:
    """A verified, loaded artifact: its manifest, its arrays and where it lives."""

    manifest: Manifest
    arrays: dict[str, npt.NDArray[Any]]
    path: Path
    texts: dict[str, str] = field(default_factory=dict)
    """Text files by name (e.g. a ranker in its library's own format), verified like arrays."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_npz(path: Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Write arrays as an uncompressed .npz whose bytes depend only on the arrays."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            arr = np.asarray(arrays[key])
            if arr.dtype == object:
                raise ArtifactError(f"array {key!r} has dtype object, which would need pickle")
            buf = io.BytesIO()
            np.lib.format.write_array(  # type: ignore[no-untyped-call]
                buf, np.ascontiguousarray(arr), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def content_version(family: str, files: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """Content address of a model: same family, arrays and params give the same version."""
    payload = json.dumps(
        {"family": family, "files": dict(files), "params": dict(params)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def write_artifact(
    out_dir: Path,
    *,
    name: str,
    family: str,
    arrays: Mapping[str, npt.NDArray[Any]],
    params: Mapping[str, Any],
    snapshot: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    git_sha: str = "unknown",
    extra: Mapping[str, Any] | None = None,
    created: str | None = None,
    texts: Mapping[str, str] | None = None,
) -> Manifest:
    """Write ``arrays``, ``texts`` and a manifest into ``out_dir`` (created, or replaced)."""
    out_dir = Path(out_dir)
    for fname in texts or {}:
        if not TEXT_FILE.match(fname):
            raise ArtifactError(f"invalid text file name {fname!r}")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-artifact-", dir=out_dir.parent))
    try:
        _write_npz(tmp / ARRAYS_FILE, arrays)
        files = {ARRAYS_FILE: sha256_file(tmp / ARRAYS_FILE)}
        for fname, text in sorted((texts or {}).items()):
            (tmp / fname).write_bytes(text.encode())
            files[fname] = sha256_file(tmp / fname)
        manifest = Manifest(
            name=name,
            family=family,
            version=content_version(family, files, params),
            created=created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            git_sha=git_sha,
            snapshot=dict(snapshot),
            params=dict(params),
            metrics=dict(metrics or {}),
            files=files,
            extra=dict(extra or {}),
        )
        (tmp / MANIFEST_FILE).write_text(manifest.to_json())
        fsync_files(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
        fsync_dir(out_dir.parent)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def read_manifest(path: Path) -> Manifest:
    """Read an artifact's manifest without loading or verifying its arrays."""
    try:
        return Manifest.from_json((Path(path) / MANIFEST_FILE).read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"no {MANIFEST_FILE} in {path}") from exc


def load_artifact(path: Path) -> Artifact:
    """Load an artifact after checking the sha256 of every file against its manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    extra_files = set(manifest.files) - {ARRAYS_FILE}
    if ARRAYS_FILE not in manifest.files or any(not TEXT_FILE.match(f) for f in extra_files):
        raise ArtifactError(f"manifest lists unexpected files {sorted(manifest.files)}")
    for fname, expected in manifest.files.items():
        fpath = path / fname
        if not fpath.is_file():
            raise ArtifactError(f"{fname} is missing from {path}")
        actual = sha256_file(fpath)
        if actual != expected:
            raise ArtifactError(
                f"sha256 mismatch for {fname}: manifest {expected[:12]}…, file {actual[:12]}…"
            )
    try:
        with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"cannot read {ARRAYS_FILE}: {exc}") from exc
    try:
        texts = {f: (path / f).read_bytes().decode() for f in sorted(extra_files)}
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"a text file is not UTF-8: {exc}") from exc
    return Artifact(manifest=manifest, arrays=arrays, path=path, texts=texts)


def manifest_signature(manifest_bytes: bytes, key: bytes) -> str:
    """The signature line of a manifest: ``hmac-sha256:<hex>``."""
    return f"{SIGNATURE_ALG}:{hmac.new(key, manifest_bytes, hashlib.sha256).hexdigest()}"


def sign_artifact(path: Path, key: bytes) -> None:
    """Write ``manifest.sig`` for the manifest in ``path`` (replaced atomically)."""
    sig = manifest_signature((Path(path) / MANIFEST_FILE).read_bytes(), key)
    atomic_write_text(Path(path) / SIGNATURE_FILE, sig + "\n")


def verify_signature(path: Path, key: bytes) -> None:
    """Raise SignatureError unless ``manifest.sig`` in ``path`` matches its manifest and ``key``."""
    path = Path(path)
    try:
        found = (path / SIGNATURE_FILE).read_text().strip()
    except FileNotFoundError as exc:
        raise SignatureError(f"{path.name} is not signed (no {SIGNATURE_FILE})") from exc
    try:
        manifest_bytes = (path / MANIFEST_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise ArtifactError(f"no {MANIFEST_FILE} in {path}") from exc
    if not hmac.compare_digest(found.encode(), manifest_signature(manifest_bytes, key).encode()):
        raise SignatureError(f"{path.name} has a signature that does not match the signing key")


class Registry:
    """A filesystem model registry: ``<root>/<name>/<version>/`` plus channel pointers.

    With ``signing_key`` the registry signs what it registers and loads only versions whose
    signature matches (see ``ModelSigningSettings`` for where the key comes from).
    """

    def __init__(self, root: Path | str, *, signing_key: bytes | None = None) -> None:
        self.root = Path(root)
        self.signing_key = signing_key or None

    def _check(self, *parts: str) -> None:
        for p in parts:
            if not p or "/" in p or p.startswith(".") or p == "channels":
                raise ArtifactError(f"invalid registry name {p!r}")

    def names(self) -> list[str]:
        """Model names in the registry."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )

    def versions(self, name: str) -> list[Manifest]:
        """Manifests of every version of ``name``, oldest first."""
        self._check(name)
        base = self.root / name
        if not base.is_dir():
            return []
        out = [
            read_manifest(p)
            for p in base.iterdir()
            if p.is_dir() and p.name != "channels" and (p / MANIFEST_FILE).is_file()
        ]
        return sorted(out, key=lambda m: (m.created, m.version))

    def path(self, name: str, version: str) -> Path:
        """Folder of one version."""
        self._check(name, version)
        return self.root / name / version

    def register(self, artifact_dir: Path, channel: str | None = None) -> tuple[Manifest, bool]:
        """Copy an artifact in under its content version; return (manifest, newly added).

        Registering the same content twice is a no-op, so periodic retraining is idempotent.
        """
        artifact = load_artifact(artifact_dir)  # verify before it enters the registry
        m = artifact.manifest
        dest = self.path(m.name, m.version)
        added = False
        if not dest.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-register-", dir=self._ensure(m.name)))
            try:
                for f in (MANIFEST_FILE, *m.files):
                    shutil.copy2(Path(artifact_dir) / f, tmp / f)
                tmp.rename(dest)
                fsync_dir(dest.parent)
                added = True
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
        if self.signing_key is not None:
            try:
                verify_signature(dest, self.signing_key)
            except SignatureError:  # new, unsigned before signing was on, or an older key
                sign_artifact(dest, self.signing_key)
        if channel is not None and self.channel(m.name, channel) != m.version:
            self.set_channel(m.name, channel, m.version)
        return m, added

    def _ensure(self, name: str) -> Path:
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        return base

    def _pointer(self, name: str, channel: str) -> Path:
        self._check(name)
        if channel not in CHANNELS:
            raise ArtifactError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
        return self.root / name / "channels" / f"{channel}.json"

    def channel_state(self, name: str, channel: str) -> dict[str, Any]:
        """The pointer document: current version, when it changed, and previous versions."""
        p = self._pointer(name, channel)
        if not p.is_file():
            return {"version": None, "updated": None, "history": []}
        data: dict[str, Any] = json.loads(p.read_text())
        return data

    def channel(self, name: str, channel: str) -> str | None:
        """Version a channel points at, or None."""
        version = self.channel_state(name, channel).get("version")
        return str(version) if version else None

    def set_channel(self, name: str, channel: str, version: str) -> None:
        """Point ``channel`` at ``version`` atomically, remembering the version it replaces."""
        if not (self.path(name, version) / MANIFEST_FILE).is_file():
            raise ArtifactError(f"{name} has no version {version}")
        state = self.channel_state(name, channel)
        history = list(state.get("history", []))
        if state.get("version") and state["version"] != version:
            history.append(state["version"])
        doc = {
            "version": version,
            "updated": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
            "history": history[-50:],
        }
        atomic_write_text(self._pointer(name, channel), json.dumps(doc, indent=2) + "\n")

    def promote(self, name: str, version: str | None = None, to: str = "stable") -> str:
        """Point ``to`` at ``version`` (default: what ``canary`` points at); return the version."""
        target = version or self.channel(name, "canary")
        if target is None:
            raise ArtifactError(f"{name} has no canary to promote")
        self.set_channel(name, to, target)
        return target

    def rollback(self, name: str, channel: str = "stable") -> str:
        """Point ``channel`` back at the version it had before; return that version."""
        state = self.channel_state(name, channel)
        history = list(state.get("history", []))
        if not history:
            raise ArtifactError(f"{name}/{channel} has no earlier version to roll back to")
        previous = history.pop()
        doc = {
            "version": previous,
            "updated": _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds"),
            "history": history,
        }
        atomic_write_text(self._pointer(name, channel), json.dumps(doc, indent=2) + "\n")
        return str(previous)

    def resolve(self, name: str, ref: str) -> Path:
        """Folder for ``ref``: a channel name or a version."""
        version = self.channel(name, ref) if ref in CHANNELS else ref
        if version is None:
            raise ArtifactError(f"{name}/{ref} points at no version")
        path = self.path(name, version)
        if not path.is_dir():
            raise ArtifactError(f"{name} has no version {version}")
        return path

    def load(self, name: str, ref: str) -> Artifact:
        """Load and verify the artifact a channel or version refers to (and its signature)."""
        path = self.resolve(name, ref)
        if self.signing_key is None:
            return load_artifact(path)
        verify_signature(path, self.signing_key)
        artifact = load_artifact(path)
        m = artifact.manifest
        if (m.name, m.version) != (name, path.name):
            # A signed manifest copied into another folder must not pass for that version.
            raise SignatureError(f"manifest of {m.name}/{m.version} sits at {name}/{path.name}")
        return artifact
