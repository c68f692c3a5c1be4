"""``live`` against a real tiny Flask recommender on loopback: calls, lines, reactions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask, Response
from werkzeug.serving import make_server

from services.common.events import RecommendationEvent, Rejected, WatchEvent, parse
from services.simulator import runner
from services.simulator.evaluation import watch_rate
from services.simulator.settings import SimulatorSettings
from services.simulator.sinks import FileSink
from services.simulator.world import World


@pytest.fixture
def recommender(small_world: World) -> Iterator[tuple[str, list[int]]]:
    """Answers every user with their true top-20; remembers who asked."""
    app = Flask("tiny-recommender")
    asked: list[int] = []

    @app.get("/recommend/<int:user>")
    def recommend(user: int) -> Response:
        asked.append(user)
        return Response(",".join(small_world.true_top_k(user, 20)), mimetype="text/plain")

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", asked
    srv.shutdown()


def test_live_calls_the_recommender_and_users_react(
    small_world: World, recommender: tuple[str, list[int]], tmp_path: Path
) -> None:
    url, asked = recommender
    settings = SimulatorSettings(
        n_users=small_world.n_users, target=url, reco_share=0.5, run_dir=str(tmp_path)
    )
    start = runner.now_start_ns()
    # 10 simulated minutes per wall second, buckets of 5 simulated minutes.
    sim = runner.build_simulation(settings, None, start, tick_s=300, world=small_world)
    out = tmp_path / "live.log"
    summary = runner.live(sim, FileSink(out), tmp_path, rate=50_000, speed=600, duration_s=3.0)
    lines = out.read_text().splitlines()
    assert summary["lines_total"] == len(lines) > 1_000
    events = [parse(x) for x in lines]
    assert not any(isinstance(e, Rejected) for e in events)
    recos = [e for e in events if isinstance(e, RecommendationEvent)]
    assert recos and all(e.status == 200 and e.host == url.removeprefix("http://") for e in recos)
    # Every logged call reached the server; calls of the last tick may still be pending.
    logged = [e.user_id for e in recos]
    assert set(logged) <= set(asked) and len(asked) - len(logged) < 0.3 * len(asked)
    for e in recos[:20]:
        assert list(e.result) == small_world.true_top_k(e.user_id, 20)
        assert 0 <= e.response_time_ms < 600
    # Stamped near the wall clock, never in the future of the simulated clock.
    assert min(e.time_ns for e in events) >= start
    rate = watch_rate(lines)
    # Lists of the last 15 simulated minutes are still open: pending, not failures.
    assert rate.trials + rate.pending == len(recos) and rate.successes > 0
    assert any(isinstance(e, WatchEvent) for e in events)
    assert (tmp_path / "truth" / "user_factors.npy").is_file()
