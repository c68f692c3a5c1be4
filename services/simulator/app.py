"""HTTP: the user and movie APIs plus ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request

from services.common.service import always_ready, ops_blueprint, register_error_handlers
from services.simulator import metrics
from services.simulator.api import Directory, Faults, RateLimiter
from services.simulator.scenarios import Scenario
from services.simulator.settings import SimulatorSettings
from services.simulator.world import World, WorldConfig


def world_config(settings: SimulatorSettings) -> WorldConfig:
    """The world a settings object describes."""
    return WorldConfig(
        seed=settings.seed,
        n_users=settings.n_users,
        n_movies=settings.n_movies,
        new_user_capacity=settings.new_user_capacity,
        catalog=settings.catalog,
    )


def api_blueprint(directory: Directory, limiter: RateLimiter, faults: Faults) -> Blueprint:
    """Thin routes: rate-limit, inject faults, ask ``directory``, time and count."""
    bp = Blueprint("api", __name__)

    def answer(endpoint: str, fn: Any, *args: Any) -> tuple[Response, int]:
        t0 = time.perf_counter()
        client = request.remote_addr or "unknown"
        if not limiter.allow(client):
            code, doc = 429, {"error": "rate limit exceeded; slow down"}
        else:
            fail, stall = faults.draw()
            if stall:
                time.sleep(stall)
            if fail:
                code, doc = 500, {"error": "internal error (injected)"}
            else:
                code, doc = fn(*args)
        metrics.API_REQUESTS.labels(endpoint, str(code)).inc()
        metrics.API_SECONDS.labels(endpoint).observe(time.perf_counter() - t0)
        resp = jsonify(doc)
        if code == 429:
            resp.headers["Retry-After"] = "1"
        return resp, code

    @bp.get("/user/<path:user_id>")
    def user(user_id: str) -> tuple[Response, int]:
        return answer("user", directory.user, user_id)

    @bp.get("/movie/<path:movie_id>")
    def movie(movie_id: str) -> tuple[Response, int]:
        return answer("movie", directory.movie, movie_id)

    @bp.get("/users")
    def users() -> tuple[Response, int]:
        return answer("users", directory.users, request.args.get("ids"))

    @bp.get("/movies")
    def movies() -> tuple[Response, int]:
        return answer("movies", directory.movies, request.args.get("ids"))

    return bp


def create_app(settings: SimulatorSettings, world: World | None = None) -> Flask:
    """The user/movie API app; builds the world from ``settings`` unless one is given."""
    world = world or World.build(world_config(settings))
    sc = Scenario.load(settings.scenario) if settings.scenario else Scenario()
    app = Flask("marquee-simulator")
    app.config["SIM_SETTINGS"] = settings
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # titles keep their accents
    app.json.sort_keys = False  # type: ignore[attr-defined]  # documents read as in the contract
    limiter = RateLimiter(settings.api_rate_limit, settings.api_burst)
    faults = Faults(sc.api_error_rate, sc.api_slow_rate, sc.api_slow_ms, settings.seed + 17)
    register_error_handlers(app, style="json")
    app.register_blueprint(api_blueprint(Directory(world), limiter, faults))
    # The world is built before the app exists: serving at all means ready.
    app.register_blueprint(ops_blueprint(always_ready))
    return app
