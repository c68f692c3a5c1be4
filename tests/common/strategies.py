"""Hypothesis strategies for stream events, shared by the common and service tests."""

from __future__ import annotations

from hypothesis import strategies as st

from services.common.events import (
    MAX_MINUTE,
    MAX_USER_ID,
    CreateAccountEvent,
    ExposureEvent,
    RateEvent,
    RecommendationEvent,
    WatchEvent,
)

_NS = 1_000_000_000
_SECONDS = st.integers(0, 4_102_444_799)  # 1970-01-01 .. 2099-12-31


@st.composite
def times(draw: st.DrawFn) -> tuple[int, int]:
    """(time_ns, fraction digits) with the ns value representable in that many digits."""
    digits = draw(st.integers(0, 9))
    frac = draw(st.integers(0, 10**digits - 1)) if digits else 0
    return draw(_SECONDS) * _NS + frac * 10 ** (9 - digits), digits


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789'._-éü", min_size=0, max_size=8)
_title_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@st.composite
def movie_ids(draw: st.DrawFn) -> str:
    """Slugs with the contract's quirks: '_' for commas, '++' for a lost '&', missing years."""
    words = [draw(_title_word), *draw(st.lists(_word, max_size=5))]
    year = draw(st.one_of(st.just(""), st.integers(1900, 2030).map(str)))
    return "+".join(words) + "+" + year


user_ids = st.integers(1, MAX_USER_ID)
hosts = st.from_regex(r"[a-z][a-z0-9.\-]{0,20}:[1-9][0-9]{0,4}", fullmatch=True)


@st.composite
def watch_events(draw: st.DrawFn) -> WatchEvent:
    """Any valid watch event."""
    t, d = draw(times())
    return WatchEvent(t, draw(user_ids), draw(movie_ids()), draw(st.integers(0, MAX_MINUTE)), d)


@st.composite
def rate_events(draw: st.DrawFn) -> RateEvent:
    """Any valid rate event."""
    t, d = draw(times())
    return RateEvent(t, draw(user_ids), draw(movie_ids()), draw(st.integers(1, 5)), d)


@st.composite
def create_events(draw: st.DrawFn) -> CreateAccountEvent:
    """Any valid account creation."""
    t, d = draw(times())
    return CreateAccountEvent(t, draw(user_ids), d)


@st.composite
def reco_events(draw: st.DrawFn) -> RecommendationEvent:
    """Any valid recommendation request line: success with ids, or an error text."""
    t, d = draw(times())
    ms = draw(st.integers(0, 100_000))
    if draw(st.booleans()):
        ids = tuple(draw(st.lists(movie_ids(), max_size=20)))
        return RecommendationEvent(t, draw(user_ids), draw(hosts), 200, ids, None, ms, d)
    status = draw(st.one_of(st.just(0), st.integers(100, 599).filter(lambda s: s != 200)))
    error = draw(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120))
    return RecommendationEvent(t, draw(user_ids), draw(hosts), status, (), error, ms, d)


tokens = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,20}", fullmatch=True)


@st.composite
def exposure_events(draw: st.DrawFn) -> ExposureEvent:
    """Any valid exposure: with or without a model, fallback, items and per-item arm tags."""
    t, d = draw(times())
    model = draw(st.one_of(st.none(), st.tuples(tokens, tokens)))
    name, version = model if model is not None else (None, None)
    status = draw(st.one_of(st.just(200), st.just(0), st.integers(100, 599)))
    items: tuple[str, ...] = ()
    arms: tuple[str, ...] | None = None
    if status == 200:
        items = tuple(draw(st.lists(movie_ids(), max_size=20)))
        tagged = draw(st.booleans())
        if items and tagged:
            arms = tuple(draw(st.lists(tokens, min_size=len(items), max_size=len(items))))
    return ExposureEvent(
        t,
        draw(user_ids),
        draw(tokens),
        draw(tokens),
        name,
        version,
        status,
        draw(st.integers(0, 100_000)),
        draw(st.one_of(st.none(), tokens)),
        items,
        arms,
        d,
    )


events = st.one_of(watch_events(), rate_events(), create_events(), reco_events(), exposure_events())
