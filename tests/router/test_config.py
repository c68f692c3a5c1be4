"""The experiment file: strict validation with one message per mistake, live reload, the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.router.cli import main
from services.router.config import ConfigError, ConfigHolder, load_config, parse_config
from tests.router.conftest import experiment, write_experiment

EXAMPLE = Path(__file__).resolve().parents[2] / "services" / "router" / "experiment.example.yaml"
URLS = {"control": "http://127.0.0.1:8083", "treatment": "http://127.0.0.1:8084"}


def test_the_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.control == "control" and [a.weight for a in cfg.arms] == [50, 50]
    assert cfg.shadow is not None and cfg.status == "running"


def _error(tmp_path: Path, **overrides: Any) -> str:
    path = write_experiment(tmp_path / "bad.yaml", experiment(URLS, **overrides))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"status": "live"}, "status: Input should be 'draft', 'running'"),
        ({"exposure": 1.5}, "exposure: Input should be less than or equal to 1"),
        ({"control": "nobody"}, "control 'nobody' is not one of the arms"),
        ({"fallback": ["not an id"]}, "fallback: not movie ids: 'not an id'"),
        ({"fallback": ["a+1999", "a+1999"]}, "fallback: movie ids must be distinct"),
        ({"fallback": []}, "fallback: List should have at least 1 item"),
        ({"status": "promoted"}, "status promoted needs 'winner'"),
        ({"winner": "control"}, "'winner' is only allowed when status is promoted"),
        ({"mode": "interleave", "arms": []}, "arms: List should have at least 1 item"),
        ({"colour": "red"}, "colour: unknown field"),
        ({"experiment": "has space"}, "experiment: value 'has space' must start"),
    ],
)
def test_each_mistake_gets_a_clear_message(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    assert message in _error(tmp_path, **overrides)


def test_arm_mistakes_are_all_listed(tmp_path: Path) -> None:
    arms = [
        {"name": "control", "url": "ftp://x", "weight": 50},
        {"name": "b", "url": "http://x", "weight": 50, "extra": 1},
        {"name": "unexposed", "url": "http://x", "weight": 0},
    ]
    text = _error(tmp_path, arms=arms)
    assert "arms.0.url: must be an http(s) URL with a host" in text
    assert "arms.1.extra: unknown field" in text
    assert "arms.2.name: arm name 'unexposed' is reserved" in text


def test_consistency_mistakes_are_listed_one_per_line(tmp_path: Path) -> None:
    arms = [
        {"name": "control", "url": "http://x", "weight": 30},
        {"name": "control", "url": "http://y", "weight": 30.001},
        {"name": "c", "url": "http://z", "weight": 10},
    ]
    text = _error(tmp_path, arms=arms, mode="interleave")
    lines = text.splitlines()
    assert "config: arm names must be unique; repeated: control" in lines
    assert "config: arm weights must add up to 100, they add up to 70.001" in lines
    assert "config: weight of arm 'control' is finer than 0.01 percent" in lines
    assert "config: interleave mode needs exactly two arms, got 3" in lines


def test_not_yaml_or_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("arms: [unclosed")
    with pytest.raises(ConfigError, match="expected a mapping"):
        parse_config("- a list")


def test_reload_applies_a_valid_file_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    path = write_experiment(tmp_path / "e.yaml", experiment(URLS))
    seen: list[str] = []
    results: list[str] = []
    holder = ConfigHolder(path, on_change=lambda c: seen.append(c.status), on_result=results.append)
    assert seen == ["running"]
    assert holder.refresh() is False and results == []  # unchanged file: nothing happens
    write_experiment(path, experiment(URLS, status="paused"))
    assert holder.refresh() is True
    assert holder.current.status == "paused" and results == ["applied"]
    write_experiment(path, experiment(URLS, exposure=7))
    assert holder.refresh() is False
    assert holder.current.status == "paused", "the old config keeps serving"
    assert holder.last_error is not None and "exposure" in holder.last_error
    assert holder.refresh() is False
    assert results == ["applied", "rejected"], "a bad file is counted once, not every poll"
    path.unlink()
    assert holder.refresh() is False and results[-1] == "rejected"
    assert holder.current.status == "paused"
    write_experiment(path, experiment(URLS, status="running", exposure=0.5))
    assert holder.refresh() is True and holder.current.exposure == 0.5
    assert seen == ["running", "paused", "running"]


def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(EXAMPLE)]) == 0
    assert capsys.readouterr().out.startswith("ok: experiment svd-vs-als-1 (split, running)")
    bad = write_experiment(tmp_path / "bad.yaml", experiment(URLS, exposure=-1))
    assert main(["check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "exposure: Input should be greater than or equal to 0" in err


def test_cli_assign(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assign", "--config", str(EXAMPLE), "1", "2", "7"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["1", "2", "7"]
    assert all(line.split()[1] in {"unexposed", "control", "treatment"} for line in lines)
    assert main(["assign", "--config", str(EXAMPLE), "abc"]) == 2
    assert "user id must be a positive decimal integer" in capsys.readouterr().err
