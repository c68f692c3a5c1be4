"""Scenario injection: faults and behaviour changes, each off by default.

Switched on by CLI flags or a scenario file (YAML or JSON) whose keys are the field names of
``Scenario``.  Every injected stream line is labelled in the run's ground truth
(``truth/injected.jsonl``: ``{"index", "kind", "line"}``) so detectors can be scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import numpy as np

from services.common.events import Rejected, parse

MALFORMED_KINDS: Final = (
    "too_few_fields",
    "too_many_fields",
    "space_around_field",
    "non_numeric_user",
    "unknown_path",
    "truncated",
    "rating_0",
    "rating_6",
    "rating_4.5",
    "rating_five",
    "bad_timestamp",
    "empty_line",
)
"""Every kind of malformed line the injector writes; each is rejected by ``events.parse``."""


@dataclass
class Scenario:
    """Which injections are on (all off by default); ``*_at_hours`` count from the run start."""

    malformed_rate: float = 0.0
    malformed_kinds: list[str] = field(default_factory=lambda: list(MALFORMED_KINDS))
    duplicate_rate: float = 0.0
    late_rate: float = 0.0
    late_max_s: float = 1800.0
    api_error_rate: float = 0.0
    api_slow_rate: float = 0.0
    api_slow_ms: int = 1500
    drift_at_hours: float | None = None
    drift_fraction: float = 0.3
    drift_strength: float = 0.8
    cold_start_at_hours: float | None = None
    cold_start_users: int = 1000
    cold_start_window_s: float = 3600.0
    spam_at_hours: float | None = None
    spam_accounts: int = 50
    spam_movie: str | None = None
    spam_window_s: float = 3600.0
    feedback_loop: float = 0.0

    def __post_init__(self) -> None:
        bad = sorted(set(self.malformed_kinds) - set(MALFORMED_KINDS))
        if bad:
            raise ValueError(f"unknown malformed kinds {bad}; known: {list(MALFORMED_KINDS)}")
        for name in ("malformed_rate", "duplicate_rate", "late_rate"):
            v = getattr(self, name)
            if not 0.0 <= v <= 0.5:
                raise ValueError(f"{name} must be within [0, 0.5], got {v}")
        for name in ("api_error_rate", "api_slow_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Scenario:
        """Build from a dict, refusing unknown keys (a typo must not silently switch nothing)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown scenario keys {unknown}; known: {sorted(known)}")
        from pydantic import TypeAdapter, ValidationError

        from services.common.cliutil import validation_message

        try:
            # Checks each value's type (``malformed_rate: lots``), then __post_init__'s ranges.
            scenario: Scenario = TypeAdapter(cls).validate_python(data)
        except ValidationError as exc:
            raise ValueError(f"bad scenario: {validation_message(exc)}") from None
        return scenario

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        """Read a scenario file: JSON, or YAML when the name ends in .yaml/.yml."""
        p = Path(path)
        text = p.read_text()
        if p.suffix in (".yaml", ".yml"):
            import yaml  # only needed for YAML scenario files

            from services.common.cliutil import yaml_message

            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"scenario file {p}: {yaml_message(exc)}") from None
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"scenario file {p}: invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"scenario file {p}: expected one mapping of scenario keys")
        try:
            return cls.from_mapping(data)
        except ValueError as exc:
            raise ValueError(f"scenario file {p}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """Plain dict of every field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _replace_rating(line: str, new: str) -> str | None:
    head, sep, _ = line.rpartition("=")
    return f"{head}={new}" if sep and "GET /rate/" in line else None


def malform(line: str, kind: str, rng: np.random.Generator) -> str:
    """A malformed variant of a valid ``line``; always rejected by ``events.parse``."""
    t, _, rest = line.partition(",")
    u, _, req = rest.partition(",")
    out: str | None
    if kind == "too_few_fields":
        out = f"{t},{req}"
    elif kind == "too_many_fields":
        out = f"{line},{u}"
    elif kind == "space_around_field":
        which = int(rng.integers(3))
        out = (f" {t},{u},{req}", f"{t}, {u} ,{req}", f"{t},{u}, {req}")[which]
    elif kind == "non_numeric_user":
        out = f"{t},user{u},{req}"
    elif kind == "unknown_path":
        out = f"{t},{u},GET /data/x/{req.rsplit('/', 1)[-1]}"
    elif kind == "truncated":
        cut = int(rng.integers(max(1, len(line) // 3), max(2, len(line) - 4)))
        out = line[:cut]
    elif kind.startswith("rating_"):
        value = {"rating_0": "0", "rating_6": "6", "rating_4.5": "4.5", "rating_five": "five"}
        out = _replace_rating(line, value[kind]) or f"{t},{u},GET /rate/x+2001={value[kind]}"
    elif kind == "bad_timestamp":
        out = (
            f"{t[:10]} {t[11:]},{u},{req}"
            if int(rng.integers(2))
            else f"{t[:4]}-13{t[7:]},{u},{req}"
        )
    elif kind == "empty_line":
        out = ""
    else:
        raise ValueError(kind)
    if not isinstance(parse(out), Rejected):  # e.g. a truncation that still parses
        out = f"{t},{u},GET /data/m/"
    return out
