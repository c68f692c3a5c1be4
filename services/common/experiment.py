"""The experiment config's schema, shared by the router (which serves it) and the monitor
(which reads, judges and rewrites it): arms, weights, control, exposure, status, policy.

``validate_config(data)`` returns an ``Experiment`` or raises ``ConfigError`` whose message
lists every mistake, one per line.  Reading YAML is the caller's job (``services.router.config``
and ``services.monitor.actions``), so this module needs only the base dependencies.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from services.common.assignment import BUCKETS
from services.common.events import is_movie_id, is_token

__all__ = [
    "INTERLEAVE",
    "MAX_ITEMS",
    "RESERVED_ARMS",
    "UNEXPOSED",
    "Arm",
    "ConfigError",
    "Experiment",
    "Guardrails",
    "Policy",
    "Shadow",
    "Status",
    "describe_error",
    "dump_config",
    "validate_config",
]

UNEXPOSED: Final = "unexposed"
"""Arm label of users outside the experiment (served by control, not counted as exposed)."""
INTERLEAVE: Final = "interleave"
"""Arm label of an interleaved answer (each item then carries the arm it came from)."""
RESERVED_ARMS: Final = frozenset({UNEXPOSED, INTERLEAVE, "static", "shadow"})
MAX_ITEMS: Final = 20


class Status(StrEnum):
    """Life cycle of an experiment; only ``running`` exposes users to treatment arms."""

    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


Token = Annotated[str, Field(min_length=1, max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http(s) URL with a host, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"must not carry a query or fragment, got {url!r}")
    return url.rstrip("/")


def _check_token(value: str, what: str) -> str:
    if not is_token(value):
        raise ValueError(
            f"{what} {value!r} must start with a letter or digit and hold only letters, digits,"
            " '_', '.', ':' or '-'"
        )
    return value


class Arm(_Strict):
    """One model version the router can send users to."""

    name: Token
    """Arm name, as recorded in exposures and metrics (``control``, ``treatment``...)."""
    url: str
    """Base URL of the arm's recommender (``GET <url>/recommend/<user>``)."""
    weight: float = Field(ge=0, le=100)
    """Percent of exposed users assigned to this arm; the arms' weights add up to 100."""
    model: Token | None = None
    """Registry model name this arm serves (for the record; the answer's headers are truth)."""
    channel: Token | None = None
    """Registry channel or pinned version the arm's recommender follows (for the record)."""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        _check_token(v, "arm name")
        if v in RESERVED_ARMS:
            raise ValueError(f"arm name {v!r} is reserved ({', '.join(sorted(RESERVED_ARMS))})")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)

    @field_validator("model", "channel")
    @classmethod
    def _record(cls, v: str | None) -> str | None:
        return None if v is None else _check_token(v, "model/channel")


class Shadow(_Strict):
    """A copy of a share of requests goes here; its answer is only measured, never served."""

    url: str
    """Base URL of the shadow recommender."""
    share: float = Field(ge=0, le=1)
    """Share of users (stable per user) whose requests are copied to the shadow."""
    model: Token | None = None
    """Registry model name the shadow serves (for the record)."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_url(v)


class Guardrails(_Strict):
    """How much worse than control a treatment arm may serve; breaking a guardrail rolls it back.

    Each guardrail compares the treatment arm with control over the same time, so a problem both
    arms share (a slow common dependency) rolls nothing back: that would not help.  An arm is
    worse when it exceeds control by more than the margin *and* a one-sided test at ``alpha``
    says so.  The absolute ``max_*`` / ``min_coverage`` limits are a backstop judged on the
    treatment arm alone: beyond them it is rolled back whatever control does.
    """

    error_rate_margin: float = Field(default=0.01, ge=0, le=1)
    """Error rate (share of requests answered with a status other than 200) by which a treatment
    arm may exceed control's; tested on per-user counts (delta method)."""
    fallback_rate_margin: float = Field(default=0.02, ge=0, le=1)
    """Fallback rate (share of requests served by control or the static list) by which a
    treatment arm may exceed control's; tested on per-user counts (delta method)."""
    coverage_margin: float = Field(default=0.02, ge=0, le=1)
    """Coverage (share of requests answered with a non-empty list) by which a treatment arm may
    fall short of control's; tested on request counts."""
    latency_p99_ratio: float = Field(default=1.5, ge=1)
    """A treatment arm's p99 answer time may reach this multiple of control's p99..."""
    latency_p99_margin_ms: float = Field(default=50.0, ge=0)
    """...or control's p99 plus this many ms, whichever is larger (so tiny times are not judged
    by ratio alone); beyond it, more than 1 % of the arm's requests must be slower (binomial)."""
    alpha: float = Field(default=0.001, gt=0, lt=0.5)
    """One-sided level of the tests against control; small, because guardrails are looked at
    every step and a false alarm rolls a good arm back."""
    max_error_rate: float = Field(default=0.2, ge=0, le=1)
    """Backstop: a treatment arm's error rate above this rolls it back whatever control's is."""
    max_fallback_rate: float = Field(default=0.5, ge=0, le=1)
    """Backstop: a treatment arm's fallback rate above this rolls it back whatever control's is."""
    max_latency_p99_ms: float = Field(default=2000.0, gt=0)
    """Backstop: a treatment arm's p99 answer time above this rolls it back whatever control's."""
    min_coverage: float = Field(default=0.0, ge=0, le=1)
    """Backstop: a treatment arm's coverage below this rolls it back whatever control's is."""
    min_requests: int = Field(default=200, ge=1)
    """Requests a treatment arm needs before its guardrails are judged (and control needs before
    the comparisons with it are)."""


class Policy(_Strict):
    """How the monitor decides an experiment: the metric, the test, ramps and guardrails."""

    metric: Literal["conversion", "watch_rate"] = "conversion"
    """``conversion``: share of users with a success; ``watch_rate``: successes per list."""
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    """Two-sided error rate of the always-valid (sequential) test the decisions use."""
    mixture_sd: float = Field(default=0.05, gt=0)
    """Spread of the mSPRT's normal mixture over effects (in metric units)."""
    min_users: int = Field(default=500, ge=2)
    """Users per arm before a promote or a statistical roll back is considered."""
    max_users: int | None = Field(default=None, ge=2)
    """Planned users per arm: reached without a verdict, the experiment stops for control."""
    ramp: list[float] = Field(default_factory=list)
    """Exposure steps (``[0.01, 0.05, 0.25, 0.5]``); empty: no ramp, promote when it wins."""
    ramp_min_users: int = Field(default=200, ge=1)
    """Users per arm at a step, guardrails fine, before the next step."""
    srm_alpha: float = Field(default=0.001, gt=0, lt=1)
    """A sample-ratio-mismatch chi-square p-value below this stops the experiment."""
    guardrails: Guardrails = Field(default_factory=Guardrails)
    """Errors, fallbacks, latency and coverage against control, with absolute backstops."""
    promote_to: Token = "stable"
    """Registry channel a winning arm's model version is promoted to."""

    @field_validator("ramp")
    @classmethod
    def _ramp(cls, v: list[float]) -> list[float]:
        if any(not 0 < s <= 1 for s in v):
            raise ValueError("ramp steps are exposure shares in (0, 1]")
        if any(b <= a for a, b in pairwise(v)):
            raise ValueError("ramp steps must increase")
        return v


class Experiment(_Strict):
    """A validated experiment config."""

    experiment: Token
    """Experiment id, as recorded in every exposure event."""
    salt: Token
    """Hash salt: a new salt reshuffles every user, so keep it for the experiment's life."""
    mode: Literal["split", "interleave"] = "split"
    """``split``: each exposed user sees one arm; ``interleave``: team-draft of two arms."""
    status: Status
    """draft, running, paused, promoted or rolled_back."""
    control: Token
    """Name of the control arm: serves unexposed users and is the first fallback."""
    exposure: float = Field(ge=0, le=1)
    """Share of users in the experiment; the rest get control and are not counted as exposed."""
    winner: Token | None = None
    """The promoted arm (required when status is promoted): it then serves everyone."""
    arms: list[Arm] = Field(min_length=1)
    """Arms in bucket order; weights (percent) add up to 100."""
    shadow: Shadow | None = None
    """Optional shadow arm."""
    fallback: list[str] = Field(min_length=1, max_length=MAX_ITEMS)
    """Static list served when no arm answers in time: 1-20 distinct movie ids."""
    policy: Policy | None = None
    """How the monitor decides this experiment; absent: the monitor only reports."""

    @field_validator("experiment", "salt", "control")
    @classmethod
    def _tokens(cls, v: str) -> str:
        return _check_token(v, "value")

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if not is_movie_id(m)]
        if bad:
            raise ValueError(f"not movie ids: {', '.join(repr(b) for b in bad[:5])}")
        if len(set(v)) != len(v):
            raise ValueError("movie ids must be distinct")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [a.name for a in self.arms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        problems = []
        if dupes:
            problems.append(f"arm names must be unique; repeated: {', '.join(dupes)}")
        if self.control not in names:
            problems.append(f"control {self.control!r} is not one of the arms {names}")
        total = sum(a.weight for a in self.arms)
        if abs(total - 100.0) > 1e-6:
            problems.append(f"arm weights must add up to 100, they add up to {total:g}")
        for arm in self.arms:
            if abs(arm.weight * BUCKETS / 100 - round(arm.weight * BUCKETS / 100)) > 1e-6:
                problems.append(f"weight of arm {arm.name!r} is finer than 0.01 percent")
        if self.mode == "interleave" and len(self.arms) != 2:
            problems.append(f"interleave mode needs exactly two arms, got {len(self.arms)}")
        if self.status is Status.PROMOTED and self.winner not in names:
            problems.append("status promoted needs 'winner' naming one of the arms")
        if self.status is not Status.PROMOTED and self.winner is not None:
            problems.append("'winner' is only allowed when status is promoted")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def arm(self, name: str) -> Arm:
        """The arm called ``name``."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


class ConfigError(ValueError):
    """An experiment file that cannot be used; the message lists every mistake."""


def describe_error(exc: ValidationError) -> str:
    """One line per mistake of a failed validation: ``where: what``."""
    lines: list[str] = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.extend(f"{where}: {line}" for line in msg.splitlines())
    return "\n".join(lines)


def validate_config(data: Any, source: str = "<config>") -> Experiment:
    """An ``Experiment`` from parsed YAML/JSON ``data``; ConfigError with one line per mistake."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of fields at the top level")
    try:
        return Experiment.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid experiment config:\n{describe_error(exc)}") from None


def dump_config(config: Experiment) -> dict[str, Any]:
    """The config as plain data that ``validate_config`` reads back to an equal config."""
    data: dict[str, Any] = config.model_dump(mode="json", exclude_none=True)
    return data
