"""Settings of the simulator service (env prefix ``MARQUEE_SIM_``)."""

from __future__ import annotations

from dataclasses import fields

from pydantic import Field

from services.common.settings import ServiceSettings, service_config
from services.simulator.engine import Behaviour


class SimulatorSettings(ServiceSettings):
    """Everything the simulator reads from the environment; CLI flags override these."""

    model_config = service_config("MARQUEE_SIM_")

    seed: int = 42
    """Seed of every random choice: same seed and flags give a byte-identical backfill."""
    n_users: int = Field(default=1_000_000, ge=1)
    """Users that exist when the run starts."""
    n_movies: int | None = Field(default=None, ge=20)
    """Movies in the catalog; unset: 27,000 synthetic ones, or exactly ML-100K's 1,682 for a
    ``movielens:`` catalog (more are filled in synthetically, fewer take the first ones)."""
    new_user_capacity: int = Field(default=50_000, ge=0)
    """Accounts reserved for users created during the run (new accounts, bursts, spam rings)."""
    catalog: str = "synthetic"
    """``synthetic`` or ``movielens:<dir>``: MovieLens 100K's movies with the ids the trainer
    gives them (titles, years and genres seeded from ``u.item``)."""
    run_dir: str = ".run/sim"
    """Folder of the run: ground truth goes to ``<run_dir>/truth/``."""
    kafka_bootstrap_servers: str = ""
    """host:port list of the brokers; empty means no Kafka (file output or API only)."""
    topic: str = "movielog"
    """Kafka topic the stream lines go to."""
    target: str = ""
    """Recommender base URL (``http://host:8082``) or ``builtin:<oracle|popularity|random>``."""
    reco_share: float = Field(default=0.2, ge=0.0, le=1.0)
    """Share of sessions for which the streaming service asks the recommender first."""
    reco_timeout_ms: int = Field(default=600, ge=1)
    """Recommendation client timeout; the contract says 600 ms."""
    reco_host: str = ""
    """Host:port written in recommendation lines; defaults to the target's host:port."""
    start: str = "2026-03-02T00:00:00"
    """Simulated start time of a backfill (zone-less ISO); live runs start now."""
    live_rate: float = Field(default=1000.0, gt=0)
    """Upper bound on events per second in live mode."""
    speed: float | None = Field(default=None, gt=0)
    """Live time acceleration: simulated seconds per wall-clock second.  Unset: real time for
    a world big enough to start 5 sessions a second, faster for a smaller one (at most 3600x),
    so that a short live run still asks for recommendations."""
    sessions_per_user_day: float = Field(default=1.2, gt=0)
    """Mean sessions a user starts per simulated day (per-user activity varies around it)."""
    new_accounts_per_day: float = Field(default=2_000.0, ge=0)
    """New accounts created per simulated day."""
    scenario: str = ""
    """Path of a scenario file (YAML or JSON) switching fault and behaviour injections on."""
    api_rate_limit: float = Field(default=200.0, ge=0)
    """Requests per second allowed per client address on the user/movie APIs (0: no limit)."""
    api_burst: int = Field(default=400, ge=1)
    """Requests a client may send at once before the rate limit applies."""
    host: str = "127.0.0.1"
    """Address the API server binds: loopback unless told otherwise (a container sets
    ``0.0.0.0`` explicitly)."""
    port: int = 8080
    """Port the API server listens on."""

    # --- behaviour of simulated users (README "Behaviour model"; utility in standard deviations)
    own_candidates: int = Field(default=64, ge=1)
    """Movies a user considers when choosing alone: 3/4 drawn by popularity, 1/4 uniformly."""
    own_temperature: float = Field(default=0.5, gt=0)
    """Softmax temperature of the choice among those candidates (lower: pickier)."""
    list_temperature: float = Field(default=0.5, gt=0)
    """Softmax temperature of the choice within a recommended list."""
    position_decay: float = Field(default=0.05, ge=0)
    """Logit lost per position down a recommended list (earlier positions get more attention)."""
    accept_bias: float = -4.5
    """p(pick from the list) = sigmoid(accept_bias + accept_slope * list attractiveness)."""
    accept_slope: float = Field(default=1.2, ge=0)
    """Weight of the list's attractiveness (its soft maximum of utility) in that probability."""
    rewatch_memory: int = Field(default=32, ge=0, le=4096)
    """Finished movies each user remembers, most recent first (0: no memory, rewatch freely)."""
    rewatch_penalty: float = Field(default=3.0, ge=0)
    """Utility a remembered finished movie loses when the user chooses again (0: none)."""
    finished_share: float = Field(default=0.9, gt=0, le=1)
    """Share of a movie's remaining minutes a session must stream to count as finishing it."""

    def behaviour(self) -> Behaviour:
        """The behaviour constants as the engine takes them."""
        return Behaviour(**{f.name: getattr(self, f.name) for f in fields(Behaviour)})
