"""``marquee sim live`` as a new user runs it: small worlds get traffic, failures are reported."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from services.common.events import RecommendationEvent, parse
from services.simulator import cli
from services.simulator.engine import NS, Engine, EngineConfig
from services.simulator.recommenders import RecoAnswer
from services.simulator.world import World
from tests.infra import free_port

SMALL_WORLD = ["--users", "1000", "--movies", "300", "--warmup-hours", "0.5", "--no-truth"]


def test_a_short_run_of_a_small_world_at_default_speed_asks_and_is_judged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "live.log"
    argv = ["live", *SMALL_WORLD, "--duration", "6", "--target", "builtin:popularity",
            "--reco-share", "1", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    events = [parse(x) for x in out.read_text().splitlines()]
    recos = [e for e in events if isinstance(e, RecommendationEvent)]
    assert len(recos) >= 5, "a few seconds of a small world must ask for recommendations"
    captured = capsys.readouterr()
    assert "x real time (--speed to choose)" in captured.err
    assert f"recommendation requests: {len(recos)} (by status 200: {len(recos)})" in captured.out
    assert "15-minute watch rate:" in captured.out and "latency ms: p50" in captured.out


def test_an_unreachable_target_is_reported_as_errors_and_fails_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "live.log"
    argv = ["live", *SMALL_WORLD, "--duration", "4", "--speed", "600", "--target", target,
            "--reco-share", "1", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert f"--target {target} is unreachable now" in captured.err
    assert f"recommendation calls reached {target} (connection refused)" in captured.err
    assert "failed requests:" in captured.out and "connection refused" in captured.out


class _Refused:
    host = "down:8082"

    def recommend(self, user_ids: np.ndarray, t_ns: int) -> list[RecoAnswer]:
        return [RecoAnswer(0, (), (), "java.net.ConnectException: Connection refused", 1)] * len(
            user_ids
        )


def test_unusable_answers_raise_no_numpy_warning(small_world: World) -> None:
    cfg = EngineConfig(seed=3, reco_share=1.0)
    engine = Engine(small_world, cfg, _Refused())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "divide by zero encountered in log" would fail here
        for _ in engine.run(until_ns=cfg.start_ns + 1800 * NS):
            pass
    assert engine.reco_status == {0: engine.stats["reco_calls"]} and engine.stats["reco_calls"] > 0
