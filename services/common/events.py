"""The stream contract: typed events for the five line shapes, a parser, a formatter.

See ``docs/contract.md``.  Every line is ``<time>,<userid>,<request>``.  ``parse`` turns a line
(text or bytes) into one of five immutable event classes (the streaming service's four, plus the
exposure our router logs), or into ``Rejected`` with a stable, named ``Reason``; ``format_line``
turns an event back into exactly the line it came from.

Times are kept as integer nanoseconds since the epoch (the zone-less local time read as UTC)
plus the number of fractional digits the line carried, so that nanosecond stamps
(``.122692921``) survive a round trip and the columnar store gets a plain ``int64``.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, NamedTuple

__all__ = [
    "MAX_LINE_CHARS",
    "MAX_MINUTE",
    "MAX_MOVIE_ID_CHARS",
    "MAX_USER_ID",
    "CreateAccountEvent",
    "Event",
    "ExposureEvent",
    "RateEvent",
    "Reason",
    "RecommendationEvent",
    "Rejected",
    "WatchEvent",
    "format",
    "format_exposure_request",
    "format_line",
    "format_time",
    "is_movie_id",
    "is_token",
    "parse",
    "parse_time",
]

MAX_LINE_CHARS: Final = 65_536
"""Longer lines are rejected before any other work: no real line is near this."""
MAX_USER_ID: Final = 2**63 - 1
"""User ids must fit the store's int64 column."""
MAX_MINUTE: Final = 1_440
"""A watch minute past a whole day of one movie is not a movie minute."""
MAX_RESPONSE_MS: Final = 3_600_000
"""Response times beyond an hour are a broken clock, not a slow server."""

_NS: Final = 1_000_000_000
_DAY_NS: Final = 86_400 * _NS
_EPOCH_ORDINAL: Final = _dt.date(1970, 1, 1).toordinal()


class Reason(StrEnum):
    """Why a line was rejected; the values are stable names used in metrics and the quarantine."""

    EMPTY_LINE = "empty_line"
    NOT_UTF8 = "not_utf8"
    LINE_TOO_LONG = "line_too_long"
    BAD_FIELD_COUNT = "bad_field_count"
    BAD_WHITESPACE = "bad_whitespace"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_USER_ID = "bad_user_id"
    UNKNOWN_REQUEST = "unknown_request"
    BAD_MOVIE_ID = "bad_movie_id"
    BAD_MINUTE = "bad_minute"
    BAD_RATING = "bad_rating"
    RATING_OUT_OF_RANGE = "rating_out_of_range"
    BAD_RECO_STATUS = "bad_reco_status"
    BAD_RECO_RESULT = "bad_reco_result"
    BAD_RESPONSE_TIME = "bad_response_time"
    BAD_EXPOSURE = "bad_exposure"
    BAD_EXPOSURE_ITEMS = "bad_exposure_items"


class WatchEvent(NamedTuple):
    """One minute of a movie streamed: ``GET /data/m/<movieid>/<minute>.mpg``."""

    time_ns: int
    user_id: int
    movie_id: str
    minute: int
    time_digits: int = 0

    @property
    def kind(self) -> Literal["watch"]:
        """The event's kind, as named in metrics and the store."""
        return "watch"


class RateEvent(NamedTuple):
    """A rating from 1 to 5: ``GET /rate/<movieid>=<rating>``."""

    time_ns: int
    user_id: int
    movie_id: str
    rating: int
    time_digits: int = 0

    @property
    def kind(self) -> Literal["rate"]:
        """The event's kind, as named in metrics and the store."""
        return "rate"


class CreateAccountEvent(NamedTuple):
    """A new account: ``GET /create_account``."""

    time_ns: int
    user_id: int
    time_digits: int = 0

    @property
    def kind(self) -> Literal["create_account"]:
        """The event's kind, as named in metrics and the store."""
        return "create_account"


class RecommendationEvent(NamedTuple):
    """The streaming service called a recommender and logged what it got back.

    ``status`` is the HTTP status, 0 for a timeout or refused connection.  For status 200
    ``result`` holds the movie ids served and ``error`` is None; otherwise ``error`` holds the
    text after ``result:`` (which may contain commas and colons) and ``result`` is empty.
    """

    time_ns: int
    user_id: int
    host: str
    status: int
    result: tuple[str, ...]
    error: str | None
    response_time_ms: int
    time_digits: int = 0

    @property
    def kind(self) -> Literal["recommendation"]:
        """The event's kind, as named in metrics and the store."""
        return "recommendation"


class ExposureEvent(NamedTuple):
    """What the router served one user: ``exposure experiment=.. arm=.. model=.. ... items=..``.

    ``model_name``/``model_version`` are None together when no model answered; ``fallback`` is
    None when the arm's own answer was served.  ``items`` are the movie ids served, best first
    (empty unless status is 200); ``item_arms`` names, per item, the arm it came from (team-draft
    interleaving), or is None when the items carry no arm tags.
    """

    time_ns: int
    user_id: int
    experiment: str
    arm: str
    model_name: str | None
    model_version: str | None
    status: int
    latency_ms: int
    fallback: str | None
    items: tuple[str, ...]
    item_arms: tuple[str, ...] | None
    time_digits: int = 0

    @property
    def kind(self) -> Literal["exposure"]:
        """The event's kind, as named in metrics and the store."""
        return "exposure"


Event = WatchEvent | RateEvent | CreateAccountEvent | RecommendationEvent | ExposureEvent


def _same_event(self: object, other: object) -> bool:
    return type(self) is type(other) and isinstance(self, tuple) and tuple.__eq__(self, other)


def _other_event(self: object, other: object) -> bool:
    return not _same_event(self, other)


def _event_hash(self: tuple[object, ...]) -> int:
    return hash((type(self).__name__, *self))


# Events are named tuples (cheap to build on the hot path: about a third of a frozen
# dataclass), but two events are equal only when they are of the same kind as well.
for _cls in (WatchEvent, RateEvent, CreateAccountEvent, RecommendationEvent, ExposureEvent):
    _cls.__eq__ = _same_event  # type: ignore[method-assign]
    _cls.__ne__ = _other_event  # type: ignore[method-assign]
    _cls.__hash__ = _event_hash  # type: ignore[method-assign]


@dataclass(frozen=True, slots=True)
class Rejected:
    """A line that is not a valid event, with a stable reason and a one-line human detail."""

    reason: Reason
    line: str
    detail: str = ""

    kind = "rejected"


# --- time ---------------------------------------------------------------------------------

_TIME_RE: Final = re.compile(r"(\d{4})-(\d\d)-(\d\d)T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)", re.ASCII)
_FRAC_SCALE: Final = tuple(10 ** (9 - n) for n in range(10))
# Dates repeat on almost every line; a small cache turns the calendar check into a dict hit.
_day_cache: dict[str, int] = {}
_day_text_cache: dict[int, str] = {}
_second_cache: dict[str, int] = {}


def _day_ns(date_text: str, y: str, m: str, d: str) -> int | None:
    days = _day_cache.get(date_text)
    if days is None:
        try:
            days = _dt.date(int(y), int(m), int(d)).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            return None
        if len(_day_cache) < 100_000:
            _day_cache[date_text] = days
    return days * _DAY_NS


def _whole_seconds_ns(text: str) -> int | None:
    m = _TIME_RE.fullmatch(text)
    if m is None:
        return None
    y, mo, d, hh, mm, ss = m.groups()
    day = _day_ns(text[:10], y, mo, d)
    if day is None:
        return None
    return day + (int(hh) * 3600 + int(mm) * 60 + int(ss)) * _NS


def parse_time(text: str) -> tuple[int, int] | None:
    """Parse ``YYYY-MM-DDTHH:MM:SS[.f{1,9}]`` into (ns since epoch, fraction digits), or None."""
    head = text[:19]
    # Many lines share a second; a bounded cache makes the common case a dict hit.
    base = _second_cache.get(head)
    if base is None:
        base = _whole_seconds_ns(head)
        if base is None:
            return None
        if len(_second_cache) >= 200_000:
            _second_cache.clear()
        _second_cache[head] = base
    if len(text) == 19:
        return base, 0
    frac = text[20:]
    n = len(frac)
    if text[19] != "." or not 0 < n <= 9 or not frac.isascii() or not frac.isdigit():
        return None
    return base + int(frac) * _FRAC_SCALE[n], n


def format_time(time_ns: int, digits: int = 0) -> str:
    """Format ns since epoch as the stream's zone-less ISO time with ``digits`` fraction digits."""
    days, rem = divmod(time_ns, _DAY_NS)
    date_text = _day_text_cache.get(days)
    if date_text is None:
        date_text = _dt.date.fromordinal(days + _EPOCH_ORDINAL).isoformat()
        if len(_day_text_cache) < 100_000:
            _day_text_cache[days] = date_text
    secs, frac = divmod(rem, _NS)
    hh, secs = divmod(secs, 3600)
    mm, ss = divmod(secs, 60)
    if digits <= 0:
        return f"{date_text}T{hh:02d}:{mm:02d}:{ss:02d}"
    return f"{date_text}T{hh:02d}:{mm:02d}:{ss:02d}.{frac // 10 ** (9 - digits):0{digits}d}"


# --- ids ----------------------------------------------------------------------------------

# A slug: lower-case title words joined by '+', punctuation mangled as the contract says
# (',' -> '_', '&' -> '' leaving '++', "'", '.', '-' and digits kept), then '+<year>' or a
# trailing '+' when the year is missing.  Lower-case accented Latin letters occur in titles.
_SLUG_ALNUM: Final = r"a-z0-9\u00df-\u00f6\u00f8-\u00ff"
_SLUG_BODY: Final = rf"[{_SLUG_ALNUM}+_'.\-]"
# Leading punctuation, then a letter or digit (so the title is not empty), then the rest of
# the title, then '+<year>' or a bare '+'.
_MOVIE_RE: Final = re.compile(rf"[+_'.\-]*[{_SLUG_ALNUM}]{_SLUG_BODY}*\+(?:\d{{4}})?")
MAX_MOVIE_ID_CHARS: Final = 256
_DIGITS_RE: Final = re.compile(r"[1-9]\d{0,18}", re.ASCII)
_INT_RE: Final = re.compile(r"-?\d+", re.ASCII)
# Numbers are written without leading zeros, so a parsed line formats back to the same text.
_CANONICAL_INT_RE: Final = re.compile(r"0|[1-9]\d*", re.ASCII)


def is_movie_id(text: str) -> bool:
    """True when ``text`` is a well-formed movie slug."""
    return len(text) <= MAX_MOVIE_ID_CHARS and _MOVIE_RE.fullmatch(text) is not None


# --- requests -----------------------------------------------------------------------------

_WATCH_RE: Final = re.compile(rf"GET /data/m/({_SLUG_BODY}+)/(0|[1-9]\d{{0,4}})\.mpg", re.ASCII)
_RATE_PREFIX: Final = "GET /rate/"
_WATCH_PREFIX: Final = "GET /data/m/"
_CREATE: Final = "GET /create_account"
_RECO_PREFIX: Final = "recommendation request "
_RECO_RE: Final = re.compile(
    r"recommendation request (\S+), status (-?\d+), result: (.*), (\S+) ms", re.DOTALL
)
_EXPOSURE_PREFIX: Final = "exposure "
# Seven key=value fields, each key once, in this order, one space apart; values hold no spaces.
_EXPOSURE_RE: Final = re.compile(
    r"exposure experiment=(\S*) arm=(\S*) model=(\S*) status=(\S*) latency_ms=(\S*)"
    r" fallback=(\S*) items=(\S*)"
)
_TOKEN_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}", re.ASCII)
_NO_VALUE: Final = "-"


def is_token(text: str) -> bool:
    """True when ``text`` is a valid experiment, arm, model name/version or fallback reason."""
    return _TOKEN_RE.fullmatch(text) is not None


def _reject(reason: Reason, line: str, detail: str) -> Rejected:
    return Rejected(reason, line, detail)


def parse(raw: str | bytes) -> Event | Rejected:
    """Parse one stream line into an event, or a ``Rejected`` with a named reason; never raises.

    One trailing newline (``\\n`` or ``\\r\\n``) is allowed: lines read from a file carry one.
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            line = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return _reject(Reason.NOT_UTF8, bytes(raw).decode("utf-8", "replace"), "not UTF-8")
    elif isinstance(raw, str):
        line = raw
    else:
        return _reject(Reason.EMPTY_LINE, repr(raw)[:200], f"not a line: {type(raw).__name__}")
    if line.endswith("\n"):
        line = line[:-2] if line.endswith("\r\n") else line[:-1]
    if not line:
        return _reject(Reason.EMPTY_LINE, line, "empty line")
    if len(line) > MAX_LINE_CHARS:
        return _reject(Reason.LINE_TOO_LONG, line[:MAX_LINE_CHARS], f"{len(line)} characters")
    try:
        return _parse(line)
    except Exception as exc:  # pragma: no cover - a parser bug must still not kill a consumer
        return _reject(Reason.UNKNOWN_REQUEST, line, f"parser error: {type(exc).__name__}")


def _parse(line: str) -> Event | Rejected:
    parts = line.split(",", 2)
    if len(parts) != 3:
        return _reject(Reason.BAD_FIELD_COUNT, line, f"{len(parts)} fields, expected 3")
    t, u, req = parts
    tm = parse_time(t)
    if tm is None:
        if t != t.strip():
            return _reject(Reason.BAD_WHITESPACE, line, "space around the time field")
        return _reject(Reason.BAD_TIMESTAMP, line, f"bad time {t[:40]!r}")
    time_ns, digits = tm
    if _DIGITS_RE.fullmatch(u) is None:
        if u != u.strip() and _DIGITS_RE.fullmatch(u.strip()):
            return _reject(Reason.BAD_WHITESPACE, line, "space around the user id")
        return _reject(Reason.BAD_USER_ID, line, f"bad user id {u[:40]!r}")
    user = int(u)
    if user > MAX_USER_ID:
        return _reject(Reason.BAD_USER_ID, line, "user id out of range")

    if req.startswith(_WATCH_PREFIX):
        return _parse_watch(line, req, time_ns, digits, user)
    if req.startswith(_RATE_PREFIX):
        return _parse_rate(line, req, time_ns, digits, user)
    if req == _CREATE:
        return CreateAccountEvent(time_ns, user, digits)
    if req.startswith(_RECO_PREFIX):
        return _parse_reco(line, req, time_ns, digits, user)
    if req.startswith(_EXPOSURE_PREFIX):
        return _parse_exposure(line, req, time_ns, digits, user)
    if req != req.strip() and req.strip()[:4] in ("GET ", "reco", "expo"):
        return _reject(Reason.BAD_WHITESPACE, line, "space around the request")
    if req.startswith("GET /") and "," in req:
        return _reject(Reason.BAD_FIELD_COUNT, line, "extra field after the request")
    return _reject(Reason.UNKNOWN_REQUEST, line, f"unknown request {req[:60]!r}")


def _parse_watch(line: str, req: str, time_ns: int, digits: int, user: int) -> Event | Rejected:
    if "," in req:
        return _reject(Reason.BAD_FIELD_COUNT, line, "extra field after the request")
    m = _WATCH_RE.fullmatch(req)
    if m is None:
        body = req[len(_WATCH_PREFIX) :]
        movie, sep, tail = body.rpartition("/")
        if not sep:
            return _reject(Reason.BAD_MOVIE_ID, line, "no /<minute>.mpg after the movie id")
        if not is_movie_id(movie):
            return _reject(Reason.BAD_MOVIE_ID, line, f"bad movie id {movie[:60]!r}")
        return _reject(Reason.BAD_MINUTE, line, f"bad minute {tail[:20]!r}")
    movie, minute_text = m.groups()
    if len(movie) > MAX_MOVIE_ID_CHARS or _MOVIE_RE.fullmatch(movie) is None:
        return _reject(Reason.BAD_MOVIE_ID, line, f"bad movie id {movie[:60]!r}")
    if int(minute_text) > MAX_MINUTE:
        return _reject(Reason.BAD_MINUTE, line, f"minute {minute_text} out of range")
    return WatchEvent(time_ns, user, movie, int(minute_text), digits)


def _parse_rate(line: str, req: str, time_ns: int, digits: int, user: int) -> Event | Rejected:
    if "," in req:
        return _reject(Reason.BAD_FIELD_COUNT, line, "extra field after the request")
    movie, sep, rating = req[len(_RATE_PREFIX) :].rpartition("=")
    if not sep:
        return _reject(Reason.BAD_RATING, line, "no =<rating> in the rate request")
    if not is_movie_id(movie):
        return _reject(Reason.BAD_MOVIE_ID, line, f"bad movie id {movie[:60]!r}")
    if len(rating) == 1 and "1" <= rating <= "5":
        return RateEvent(time_ns, user, movie, int(rating), digits)
    if _INT_RE.fullmatch(rating):
        return _reject(Reason.RATING_OUT_OF_RANGE, line, f"rating {rating[:20]} not in 1..5")
    return _reject(Reason.BAD_RATING, line, f"rating {rating[:20]!r} is not an integer")


def _parse_reco(line: str, req: str, time_ns: int, digits: int, user: int) -> Event | Rejected:
    m = _RECO_RE.fullmatch(req)
    if m is None:
        # Name the first part that is wrong, reading the fields the way the contract does.
        head, _, last = req.rpartition(", ")
        if not last.endswith(" ms"):
            return _reject(Reason.BAD_RESPONSE_TIME, line, "no '<n> ms' response time at the end")
        if ", status " not in head:
            return _reject(Reason.BAD_FIELD_COUNT, line, "no status in recommendation request")
        return _reject(Reason.BAD_RECO_STATUS, line, "malformed status or result")
    host, status_text, result, ms_text = m.groups()
    if len(status_text) > 3 or not _CANONICAL_INT_RE.fullmatch(status_text):
        return _reject(Reason.BAD_RECO_STATUS, line, f"status {status_text[:20]!r}")
    status = int(status_text)
    if status != 0 and not 100 <= status <= 599:
        return _reject(Reason.BAD_RECO_STATUS, line, f"status {status} out of range")
    if len(ms_text) > 7 or not _CANONICAL_INT_RE.fullmatch(ms_text):
        return _reject(Reason.BAD_RESPONSE_TIME, line, f"response time {ms_text[:20]!r}")
    ms = int(ms_text)
    if ms > MAX_RESPONSE_MS:
        return _reject(Reason.BAD_RESPONSE_TIME, line, f"response time {ms} ms out of range")
    if status == 200:
        ids = tuple(result.split(", ")) if result else ()
        for movie in ids:
            if not is_movie_id(movie):
                return _reject(Reason.BAD_RECO_RESULT, line, f"bad movie id {movie[:60]!r}")
        return RecommendationEvent(time_ns, user, host, 200, ids, None, ms, digits)
    return RecommendationEvent(time_ns, user, host, status, (), result, ms, digits)


def _parse_exposure(line: str, req: str, time_ns: int, digits: int, user: int) -> Event | Rejected:
    m = _EXPOSURE_RE.fullmatch(req)
    if m is None:
        return _reject(
            Reason.BAD_EXPOSURE,
            line,
            "expected experiment= arm= model= status= latency_ms= fallback= items=, in order",
        )
    experiment, arm, model, status_text, ms_text, fallback_text, items_text = m.groups()
    for key, value in (("experiment", experiment), ("arm", arm)):
        if not is_token(value):
            return _reject(Reason.BAD_EXPOSURE, line, f"bad {key} {value[:60]!r}")
    name: str | None = None
    version: str | None = None
    if model != _NO_VALUE:
        name, sep, version = model.partition("@")
        if not sep or not is_token(name) or not is_token(version):
            return _reject(Reason.BAD_EXPOSURE, line, f"bad model {model[:60]!r}")
    if len(status_text) > 3 or not _CANONICAL_INT_RE.fullmatch(status_text):
        return _reject(Reason.BAD_EXPOSURE, line, f"bad status {status_text[:20]!r}")
    status = int(status_text)
    if status != 0 and not 100 <= status <= 599:
        return _reject(Reason.BAD_EXPOSURE, line, f"status {status} out of range")
    if not _CANONICAL_INT_RE.fullmatch(ms_text) or len(ms_text) > 7:
        return _reject(Reason.BAD_EXPOSURE, line, f"bad latency_ms {ms_text[:20]!r}")
    ms = int(ms_text)
    if ms > MAX_RESPONSE_MS:
        return _reject(Reason.BAD_EXPOSURE, line, f"latency_ms {ms} out of range")
    fallback: str | None = None
    if fallback_text != _NO_VALUE:
        if not is_token(fallback_text):
            return _reject(Reason.BAD_EXPOSURE, line, f"bad fallback {fallback_text[:60]!r}")
        fallback = fallback_text
    if not items_text:
        return ExposureEvent(
            time_ns, user, experiment, arm, name, version, status, ms, fallback, (), None, digits
        )
    if status != 200:
        return _reject(Reason.BAD_EXPOSURE_ITEMS, line, f"items served with status {status}")
    movies: list[str] = []
    arms: list[str] = []
    for item in items_text.split(";"):
        movie, sep, tag = item.partition("|")
        if not is_movie_id(movie):
            return _reject(Reason.BAD_EXPOSURE_ITEMS, line, f"bad movie id {movie[:60]!r}")
        if sep and not is_token(tag):
            return _reject(Reason.BAD_EXPOSURE_ITEMS, line, f"bad arm tag {tag[:60]!r}")
        movies.append(movie)
        if sep:
            arms.append(tag)
    if arms and len(arms) != len(movies):
        return _reject(Reason.BAD_EXPOSURE_ITEMS, line, "arm tags on some items but not all")
    tags = tuple(arms) if arms else None
    return ExposureEvent(
        time_ns,
        user,
        experiment,
        arm,
        name,
        version,
        status,
        ms,
        fallback,
        tuple(movies),
        tags,
        digits,
    )


def format_exposure_request(event: ExposureEvent) -> str:
    """The ``<request>`` part of an exposure line."""
    model = (
        f"{event.model_name}@{event.model_version}"
        if event.model_name is not None and event.model_version is not None
        else _NO_VALUE
    )
    if event.item_arms is None:
        items = ";".join(event.items)
    else:
        items = ";".join(f"{m}|{a}" for m, a in zip(event.items, event.item_arms, strict=True))
    return (
        f"exposure experiment={event.experiment} arm={event.arm} model={model}"
        f" status={event.status} latency_ms={event.latency_ms}"
        f" fallback={event.fallback if event.fallback is not None else _NO_VALUE} items={items}"
    )


# --- formatting ---------------------------------------------------------------------------


def format_line(event: Event) -> str:
    """Format an event as its stream line (no trailing newline); the inverse of ``parse``."""
    t = format_time(event.time_ns, event.time_digits)
    if isinstance(event, WatchEvent):
        return f"{t},{event.user_id},GET /data/m/{event.movie_id}/{event.minute}.mpg"
    if isinstance(event, RateEvent):
        return f"{t},{event.user_id},GET /rate/{event.movie_id}={event.rating}"
    if isinstance(event, CreateAccountEvent):
        return f"{t},{event.user_id},GET /create_account"
    if isinstance(event, ExposureEvent):
        return f"{t},{event.user_id},{format_exposure_request(event)}"
    result = ", ".join(event.result) if event.status == 200 else (event.error or "")
    return (
        f"{t},{event.user_id},recommendation request {event.host}, status {event.status}, "
        f"result: {result}, {event.response_time_ms} ms"
    )


format = format_line
