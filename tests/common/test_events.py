"""The stream contract: examples from the contract, every rejection reason, and properties."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.events import (
    CreateAccountEvent,
    ExposureEvent,
    RateEvent,
    Reason,
    RecommendationEvent,
    Rejected,
    WatchEvent,
    format_line,
    format_time,
    is_movie_id,
    parse,
    parse_time,
)
from tests.common.strategies import events, exposure_events, movie_ids

CONTRACT_LINES = [
    "2026-03-02T14:21:02,83916,GET /data/m/the+lost+harbor+1987/17.mpg",
    "2026-03-02T14:21:06,224612,GET /rate/night+of+glass+2004=4",
    "2026-03-02T10:30:03,99999,GET /create_account",
    "2026-03-02T01:33:45.122692921,227244,recommendation request marquee-router:8082, status 200,"
    " result: the+lost+harbor+1987, night+of+glass+2004, red+river+crossing+1951, 25 ms",
    "2026-03-02T01:45:32.945123,284507,recommendation request marquee-router:8082, status 0,"
    " result: java.util.concurrent.TimeoutException: Request timeout to"
    " marquee-router/10.0.0.7:8082 after 600 ms, 612 ms",
    "2026-03-02T02:00:01.099,215124,recommendation request marquee-router:8082, status 0,"
    " result: java.net.ConnectException: Connection refused, 1 ms",
]
# The exposure examples of docs/contract.md: plain, interleaved, fallback, failure.
EXPOSURE_LINES = [
    "2026-03-02T14:21:02.123,83916,exposure experiment=canary-7 arm=canary"
    " model=svd@3f9c0a1b2d4e5f60 status=200 latency_ms=41 fallback=-"
    " items=the+lost+harbor+1987;night+of+glass+2004",
    "2026-03-02T14:21:03.5,224612,exposure experiment=ab-3 arm=interleave model=svd@1a2b"
    " status=200 latency_ms=58 fallback=- items=the+lost+harbor+1987|svd;monsters_+inc.+2001|als",
    "2026-03-02T14:21:04,99999,exposure experiment=canary-7 arm=stable model=popularity@9e8d"
    " status=200 latency_ms=602 fallback=timeout items=red+river+crossing+1951",
    "2026-03-02T14:21:05,99998,exposure experiment=canary-7 arm=canary model=-"
    " status=503 latency_ms=3 fallback=no_model items=",
]


@pytest.mark.parametrize("line", CONTRACT_LINES + EXPOSURE_LINES)
def test_contract_examples_parse_and_format_back(line: str) -> None:
    event = parse(line)
    assert not isinstance(event, Rejected), event
    assert format_line(event) == line


def test_contract_examples_fields() -> None:
    w, r, c, ok, timeout, refused = (parse(x) for x in CONTRACT_LINES)
    assert w == WatchEvent(w.time_ns, 83916, "the+lost+harbor+1987", 17, 0)
    assert isinstance(r, RateEvent) and r.rating == 4 and r.movie_id == "night+of+glass+2004"
    assert isinstance(c, CreateAccountEvent) and c.user_id == 99999
    assert isinstance(ok, RecommendationEvent)
    assert ok.status == 200 and ok.response_time_ms == 25 and ok.time_digits == 9
    assert ok.result == ("the+lost+harbor+1987", "night+of+glass+2004", "red+river+crossing+1951")
    assert ok.time_ns % 1_000_000_000 == 122_692_921
    assert isinstance(timeout, RecommendationEvent) and timeout.status == 0
    assert timeout.error is not None and timeout.error.endswith("after 600 ms")
    assert timeout.response_time_ms == 612 and timeout.result == ()
    assert isinstance(refused, RecommendationEvent)
    assert refused.error == "java.net.ConnectException: Connection refused"


def test_exposure_examples_fields() -> None:
    plain, interleaved, fallback, failed = (parse(x) for x in EXPOSURE_LINES)
    assert isinstance(plain, ExposureEvent)
    assert plain == ExposureEvent(
        plain.time_ns,
        83916,
        "canary-7",
        "canary",
        "svd",
        "3f9c0a1b2d4e5f60",
        200,
        41,
        None,
        ("the+lost+harbor+1987", "night+of+glass+2004"),
        None,
        3,
    )
    assert plain.kind == "exposure"
    assert isinstance(interleaved, ExposureEvent)
    assert interleaved.items == ("the+lost+harbor+1987", "monsters_+inc.+2001")
    assert interleaved.item_arms == ("svd", "als")
    assert isinstance(fallback, ExposureEvent) and fallback.fallback == "timeout"
    assert fallback.model_name == "popularity" and fallback.latency_ms == 602
    assert isinstance(failed, ExposureEvent) and failed.status == 503
    assert failed.model_name is failed.model_version is None and failed.items == ()


@pytest.mark.parametrize(
    "slug",
    [
        "the+godfather+1972",
        "monsters_+inc.+2001",
        "cheech++chong+1985",
        "schindler's+list+1993",
        "x-men+2000",
        "1917+2019",
        "the+lost+harbor+",
        "amélie+2001",
        "...and+justice+for+all+1979",
    ],
)
def test_movie_id_quirks_accepted(slug: str) -> None:
    assert is_movie_id(slug)


@pytest.mark.parametrize(
    "slug", ["", "+", "+1999", "The+Godfather+1972", "the godfather 1972", "the+godfather", "a,b+"]
)
def test_movie_id_malformed_rejected(slug: str) -> None:
    assert not is_movie_id(slug)


T = "2026-03-02T14:21:02"
MALFORMED = [
    ("", Reason.EMPTY_LINE),
    ("\n", Reason.EMPTY_LINE),
    (b"\xff\xfe\x00garbage", Reason.NOT_UTF8),
    ("x" * 70_000, Reason.LINE_TOO_LONG),
    (f"{T},83916", Reason.BAD_FIELD_COUNT),
    ("2026-03-02T14:21", Reason.BAD_FIELD_COUNT),
    (f"{T},83916,GET /rate/night+of+glass+2004=4,extra", Reason.BAD_FIELD_COUNT),
    (f"{T},83916,GET /data/m/a+1999/3.mpg,5", Reason.BAD_FIELD_COUNT),
    (f" {T},83916,GET /create_account", Reason.BAD_WHITESPACE),
    (f"{T}, 83916,GET /create_account", Reason.BAD_WHITESPACE),
    (f"{T},83916 ,GET /create_account", Reason.BAD_WHITESPACE),
    (f"{T},83916, GET /create_account", Reason.BAD_WHITESPACE),
    ("2026-13-02T14:21:02,83916,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2026-02-30T14:21:02,83916,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2026-03-02T24:00:00,83916,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2026-03-02 14:21:02,83916,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2026-03-02T14:21:02.1234567890,83916,GET /create_account", Reason.BAD_TIMESTAMP),
    ("2026-03-02T14:21:02Z,83916,GET /create_account", Reason.BAD_TIMESTAMP),
    ("yesterday,83916,GET /create_account", Reason.BAD_TIMESTAMP),
    (f"{T},abc,GET /create_account", Reason.BAD_USER_ID),
    (f"{T},-5,GET /create_account", Reason.BAD_USER_ID),
    (f"{T},0,GET /create_account", Reason.BAD_USER_ID),
    (f"{T},007,GET /create_account", Reason.BAD_USER_ID),
    (f"{T},,GET /create_account", Reason.BAD_USER_ID),
    (f"{T},99999999999999999999,GET /create_account", Reason.BAD_USER_ID),
    (f"{T},١٢٣,GET /create_account", Reason.BAD_USER_ID),
    (f"{T},83916,GET /data/m/The+Lost+Harbor+1987/17.mpg", Reason.BAD_MOVIE_ID),
    (f"{T},83916,GET /data/m/the+lost+harb", Reason.BAD_MOVIE_ID),
    (f"{T},83916,GET /data/m//17.mpg", Reason.BAD_MOVIE_ID),
    (f"{T},83916,GET /data/m/the+lost+harbor+1987/-1.mpg", Reason.BAD_MINUTE),
    (f"{T},83916,GET /data/m/the+lost+harbor+1987/ten.mpg", Reason.BAD_MINUTE),
    (f"{T},83916,GET /data/m/the+lost+harbor+1987/017.mpg", Reason.BAD_MINUTE),
    (f"{T},83916,GET /data/m/the+lost+harbor+1987/99999.mpg", Reason.BAD_MINUTE),
    (f"{T},83916,GET /data/m/the+lost+harbor+1987/17.mp", Reason.BAD_MINUTE),
    (f"{T},83916,GET /rate/night+of+glass+2004=0", Reason.RATING_OUT_OF_RANGE),
    (f"{T},83916,GET /rate/night+of+glass+2004=6", Reason.RATING_OUT_OF_RANGE),
    (f"{T},83916,GET /rate/night+of+glass+2004=100", Reason.RATING_OUT_OF_RANGE),
    (f"{T},83916,GET /rate/night+of+glass+2004=-1", Reason.RATING_OUT_OF_RANGE),
    (f"{T},83916,GET /rate/night+of+glass+2004=4.5", Reason.BAD_RATING),
    (f"{T},83916,GET /rate/night+of+glass+2004=five", Reason.BAD_RATING),
    (f"{T},83916,GET /rate/night+of+glass+2004=", Reason.BAD_RATING),
    (f"{T},83916,GET /rate/night+of+glass+2004", Reason.BAD_RATING),
    (f"{T},83916,GET /rate/NIGHT=4", Reason.BAD_MOVIE_ID),
    (f"{T},83916,GET /login", Reason.UNKNOWN_REQUEST),
    (f"{T},83916,POST /rate/night+of+glass+2004=4", Reason.UNKNOWN_REQUEST),
    (f"{T},83916,GET /create_account/now", Reason.UNKNOWN_REQUEST),
    (f"{T},83916,recommendation request h:1, status 2000, result: x, 5 ms", Reason.BAD_RECO_STATUS),
    (f"{T},83916,recommendation request h:1, status 99, result: x, 5 ms", Reason.BAD_RECO_STATUS),
    (f"{T},83916,recommendation request h:1, status 020, result: x, 5 ms", Reason.BAD_RECO_STATUS),
    (f"{T},83916,recommendation request h:1, status ok, result: x, 5 ms", Reason.BAD_RECO_STATUS),
    (f"{T},83916,recommendation request h:1, status 200, result: a+1, 5", Reason.BAD_RESPONSE_TIME),
    (
        f"{T},83916,recommendation request h:1, status 200, result: a+1, x ms",
        Reason.BAD_RESPONSE_TIME,
    ),
    (f"{T},83916,recommendation request h:1, status 0, result: e, -3 ms", Reason.BAD_RESPONSE_TIME),
    (
        f"{T},83916,recommendation request h:1, status 0, result: e, 1.5 ms",
        Reason.BAD_RESPONSE_TIME,
    ),
    (
        f"{T},83916,recommendation request h:1, status 200, result: A B, 5 ms",
        Reason.BAD_RECO_RESULT,
    ),
    (
        f"{T},83916,recommendation request h:1, status 200, result: a+1,b+2, 5 ms",
        Reason.BAD_RECO_RESULT,
    ),
    (f"{T},83916,recommendation request h:1, result: a+1, 5 ms", Reason.BAD_FIELD_COUNT),
    (f"{T},83916, exposure experiment=e arm=a", Reason.BAD_WHITESPACE),
]
_X = "exposure experiment=e1 arm=a model=svd@v1 status=200 latency_ms=5 fallback=- items="
EXPOSURE_MALFORMED = [
    # The header: fields missing, repeated, out of order, or with bad values.
    "exposure experiment=e1 arm=a model=svd@v1 status=200 latency_ms=5 fallback=-",
    "exposure arm=a experiment=e1 model=svd@v1 status=200 latency_ms=5 fallback=- items=",
    _X.replace("arm=a", "arm=a arm=b"),
    _X.replace("arm=a ", "arm=a  "),
    _X + " ",
    _X.replace("experiment=e1", "experiment="),
    _X.replace("experiment=e1", "experiment=-"),
    _X.replace("arm=a", "arm=a|b"),
    _X.replace("arm=a", "arm=ä"),
    _X.replace("model=svd@v1", "model=svd"),
    _X.replace("model=svd@v1", "model=svd@"),
    _X.replace("model=svd@v1", "model=@v1"),
    _X.replace("model=svd@v1", "model=svd@v1@v2"),
    _X.replace("model=svd@v1", "model="),
    _X.replace("status=200", "status=2000"),
    _X.replace("status=200", "status=020"),
    _X.replace("status=200", "status=99"),
    _X.replace("status=200", "status=ok"),
    _X.replace("latency_ms=5", "latency_ms=-5"),
    _X.replace("latency_ms=5", "latency_ms=1.5"),
    _X.replace("latency_ms=5", "latency_ms=05"),
    _X.replace("latency_ms=5", "latency_ms=9999999"),
    _X.replace("fallback=-", "fallback="),
    _X.replace("fallback=-", "fallback=time out"),
    "exposure experiment=e1 arm=a model=svd@v1 status=200 latency_ms=5 fallback=- items=a+1, b+2",
]
EXPOSURE_BAD_ITEMS = [
    _X + "The+Godfather+1972",
    _X + "a+1;;b+2",
    _X + "a+1;",
    _X + ";a+1",
    _X + "a+1,b+2",
    _X + "a+1|svd;b+2",
    _X + "a+1;b+2|svd",
    _X + "a+1|",
    _X + "a+1|svd|als",
    _X + "a+1|-",
    _X.replace("status=200", "status=0") + "a+1",
    _X.replace("status=200", "status=503") + "a+1|svd",
]


@pytest.mark.parametrize(
    ("request_text", "reason"),
    [(r, Reason.BAD_EXPOSURE) for r in EXPOSURE_MALFORMED]
    + [(r, Reason.BAD_EXPOSURE_ITEMS) for r in EXPOSURE_BAD_ITEMS],
)
def test_malformed_exposures_are_rejected_with_their_reason(
    request_text: str, reason: Reason
) -> None:
    result = parse(f"{T},83916,{request_text}")
    assert isinstance(result, Rejected), result
    assert result.reason is reason, (result.reason, result.detail)
    assert result.detail and "\n" not in result.detail


@pytest.mark.parametrize(("line", "reason"), MALFORMED)
def test_malformed_lines_are_rejected_with_their_reason(line: str | bytes, reason: Reason) -> None:
    result = parse(line)
    assert isinstance(result, Rejected), result
    assert result.reason is reason, (result.reason, result.detail)
    assert result.detail and "\n" not in result.detail


def test_every_reason_is_exercised() -> None:
    assert {r for _, r in MALFORMED} | {Reason.BAD_EXPOSURE, Reason.BAD_EXPOSURE_ITEMS} == set(
        Reason
    )
    assert EXPOSURE_MALFORMED and EXPOSURE_BAD_ITEMS


def test_trailing_newline_is_allowed_and_bytes_are_accepted() -> None:
    line = CONTRACT_LINES[0]
    assert parse(line + "\n") == parse(line) == parse((line + "\r\n").encode())


def test_time_round_trip_and_precision() -> None:
    assert parse_time("1970-01-01T00:00:00") == (0, 0)
    assert parse_time("1970-01-01T00:00:01.5") == (1_500_000_000, 1)
    assert parse_time("2026-03-02T01:33:45.122692921") is not None
    for text in ("2026-03-02T01:33:45", "2026-03-02T01:33:45.1", "2000-02-29T23:59:59.000000001"):
        parsed = parse_time(text)
        assert parsed is not None
        assert format_time(*parsed) == text


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(events)
def test_parse_inverts_format(event: object) -> None:
    line = format_line(event)  # type: ignore[arg-type]
    assert parse(line) == event
    assert parse(line.encode()) == event


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(exposure_events())
def test_exposures_round_trip(event: ExposureEvent) -> None:
    line = format_line(event)
    assert parse(line) == event
    assert line.split(",", 2)[2].startswith("exposure experiment=")


@settings(max_examples=300)
@given(movie_ids())
def test_generated_slugs_are_movie_ids(slug: str) -> None:
    assert is_movie_id(slug)


@settings(max_examples=500)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_and_valid_lines_are_canonical(text: str) -> None:
    result = parse(text)
    if not isinstance(result, Rejected):
        assert format_line(result) == text.removesuffix("\n").removesuffix("\r")
    else:
        assert isinstance(result.reason, Reason)


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    assert parse(data) is not None


@settings(max_examples=300)
@given(
    st.sampled_from(CONTRACT_LINES + EXPOSURE_LINES),
    st.integers(0, 200),
    st.text(max_size=5),
)
def test_mutated_contract_lines_never_raise(line: str, pos: int, junk: str) -> None:
    pos = min(pos, len(line))
    for mutated in (line[:pos], line[:pos] + junk + line[pos:], line[pos:]):
        result = parse(mutated)
        if not isinstance(result, Rejected):
            # Whatever is accepted is canonical: it formats back to exactly the text parsed.
            assert format_line(result) == mutated.removesuffix("\n").removesuffix("\r")


@settings(max_examples=300)
@given(
    st.sampled_from(EXPOSURE_LINES),
    st.integers(0, 200),
    st.sampled_from([" ", "=", ";", "|", "@", "-", ",", "0", "a", "+", ""]),
)
def test_exposure_lines_with_a_character_changed_are_canonical_or_rejected(
    line: str, pos: int, char: str
) -> None:
    pos = min(pos, len(line) - 1)
    for mutated in (line[:pos] + char + line[pos + 1 :], line[:pos] + char + line[pos:]):
        result = parse(mutated)
        if isinstance(result, Rejected):
            assert isinstance(result.reason, Reason) and result.detail
        else:
            assert format_line(result) == mutated


def test_parse_of_non_text_is_rejected_not_raised() -> None:
    assert isinstance(parse(None), Rejected)  # type: ignore[arg-type]
    assert isinstance(parse(12), Rejected)  # type: ignore[arg-type]


def test_events_of_different_kinds_never_compare_equal() -> None:
    from services.common.events import CreateAccountEvent as C

    a = C(1, 2, 0)
    assert a == C(1, 2, 0) and hash(a) == hash(C(1, 2, 0))
    plain = (1, 2, 0)
    assert a != plain
    assert plain != a  # the reflected comparison is the point
    w = WatchEvent(1, 2, "a+", 3, 0)
    r = RateEvent(1, 2, "a+", 3, 0)
    assert w != r and hash(w) != hash(r) and len({w, r}) == 2
    assert (w.kind, r.kind, a.kind) == ("watch", "rate", "create_account")
