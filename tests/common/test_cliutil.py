"""``services.common.cliutil``: what each kind of failure becomes (one line, which exit code)."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel, Field, ValidationError

from services.common.cliutil import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
    CliError,
    Parser,
    run_cli,
    validation_message,
)


class _Cfg(BaseModel):
    workers: int = Field(ge=1)


def _raise(exc: BaseException) -> int:
    raise exc


@pytest.mark.parametrize(
    ("exc", "code", "words"),
    [
        (CliError("no model 'x'", "pass --model", EXIT_REFUSED), EXIT_REFUSED,
         ["no model 'x'; pass --model"]),
        (FileNotFoundError(2, "No such file or directory", "/nope.log"), EXIT_NOT_FOUND,
         ["no such file or folder: /nope.log"]),
        (PermissionError(13, "Permission denied", "/root/x"), EXIT_FAILED,
         ["Permission denied: /root/x"]),
        (ValueError("bad\nvalue"), EXIT_USAGE, ["bad value"]),
    ],
)  # fmt: skip
def test_failures_become_one_line(
    exc: BaseException, code: int, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli("marquee x", lambda: _raise(exc)) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("marquee x: error: "), err
    assert all(w in err for w in words), err


def test_settings_and_yaml_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValidationError) as info:
        _Cfg(workers=0)
    assert validation_message(info.value, {"workers": "workers"}) == (
        "workers (--workers): Input should be greater than or equal to 1, got 0"
    )
    assert run_cli("marquee x", lambda: _raise(info.value)) == EXIT_USAGE
    assert "invalid settings: workers: " in capsys.readouterr().err
    with pytest.raises(yaml.YAMLError) as bad:
        yaml.safe_load("a: [1\nb: 2\n")
    assert run_cli("marquee x", lambda: _raise(bad.value)) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid YAML at line 2" in err


def test_bugs_keep_their_traceback_and_usage_errors_are_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ZeroDivisionError):
        run_cli("marquee x", lambda: 1 // 0)
    ap = Parser(prog="marquee x")
    ap.add_argument("--n", type=int, help="a number")
    assert run_cli("marquee x", lambda: ap.parse_args(["--n", "many"]) and 0) == EXIT_USAGE
    err = capsys.readouterr().err
    assert (
        err == "marquee x: error: argument --n: invalid int value: 'many'; see 'marquee x --help'\n"
    )
