"""The experiment config: one YAML file (a ConfigMap), validated strictly, reloaded while serving.

``load_config(path)`` returns an ``Experiment`` or raises ``ConfigError`` whose message lists
every mistake, one per line.  ``ConfigHolder`` serves the current config and swaps in a new one
only when it validates: an invalid file is refused and the old config keeps serving.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from services.common.experiment import (
    INTERLEAVE,
    MAX_ITEMS,
    RESERVED_ARMS,
    UNEXPOSED,
    Arm,
    ConfigError,
    Experiment,
    Shadow,
    Status,
    validate_config,
)

log = logging.getLogger("marquee.router.config")

# The schema lives in services.common.experiment (the monitor reads and rewrites the same
# file); these names stay importable from here for the router's modules.
__all__ = [
    "INTERLEAVE",
    "MAX_ITEMS",
    "RESERVED_ARMS",
    "UNEXPOSED",
    "Arm",
    "ConfigError",
    "ConfigHolder",
    "Experiment",
    "Shadow",
    "Status",
    "load_config",
    "parse_config",
]


def parse_config(text: str, source: str = "<config>") -> Experiment:
    """Validate YAML ``text``; ConfigError with one line per mistake."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from None
    return validate_config(data, source)


def load_config(path: str | Path) -> Experiment:
    """Read and validate the experiment file at ``path``."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse_config(text, str(p))


class ConfigHolder:
    """The config in force, re-read every ``interval_s``; a bad new file never replaces it.

    Requests read ``current`` once (one reference read), so a swap never changes the config
    under a request that already started.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        interval_s: float = 1.0,
        on_change: Callable[[Experiment], None] | None = None,
        on_result: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self._on_change = on_change
        self._on_result = on_result
        raw = self._read()
        self.current: Experiment = parse_config(raw.decode("utf-8", "replace"), str(self.path))
        self._digest = hashlib.sha256(raw).hexdigest()
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if on_change is not None:
            on_change(self.current)

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc}") from None

    def refresh(self) -> bool:
        """Re-read the file; True when a new, valid config was swapped in."""
        try:
            raw = self._read()
        except ConfigError as exc:
            return self._reject(str(exc), None)
        digest = hashlib.sha256(raw).hexdigest()
        if digest == self._digest:
            return False
        try:
            new = parse_config(raw.decode("utf-8", "replace"), str(self.path))
        except ConfigError as exc:
            return self._reject(str(exc), digest)
        self.current = new
        self._digest = digest
        self.last_error = None
        log.info(
            "experiment config applied",
            extra={"experiment": new.experiment, "status": str(new.status), "sha256": digest},
        )
        if self._on_change is not None:
            self._on_change(new)
        if self._on_result is not None:
            self._on_result("applied")
        return True

    def _reject(self, message: str, digest: str | None) -> bool:
        # Log and count a bad file once, not on every poll while it stays bad.
        if digest is not None and digest == getattr(self, "_rejected", None):
            return False
        if digest is None and self.last_error == message:
            return False
        self._rejected = digest
        self.last_error = message
        log.error(
            "experiment config rejected; keeping the current config",
            extra={"error": message, "experiment": self.current.experiment},
        )
        if self._on_result is not None:
            self._on_result("rejected")
        return False

    def start(self) -> None:
        """Poll the file in a daemon thread (call after fork: threads do not survive it)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.refresh()
            except Exception:  # the watcher must outlive any surprise; the old config serves
                log.exception("config watcher error")

    def stop(self) -> None:
        """Stop polling."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
