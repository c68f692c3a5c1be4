"""Drives an engine: ``backfill`` (as fast as possible) and ``live`` (paced to the clock)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from tqdm import tqdm

from services.common.runtime import GracefulStop
from services.common.settings import KafkaSettings
from services.simulator import metrics
from services.simulator.app import world_config
from services.simulator.engine import NS, Batch, Engine, EngineConfig, TruthWriter, parse_start
from services.simulator.recommenders import HttpRecommender, Recommender, make_recommender
from services.simulator.report import OnlineTally
from services.simulator.scenarios import Scenario
from services.simulator.settings import SimulatorSettings
from services.simulator.sinks import FileSink, KafkaSink, Sink
from services.simulator.world import World

log = logging.getLogger(__name__)
_KINDS = ("watch", "rate", "create_account", "recommendation")


@dataclass
class Simulation:
    """A world, an engine over it, and what its recommendation calls go to."""

    world: World
    engine: Engine
    recommender: Recommender | None

    def close(self) -> None:
        """Stop the HTTP client's threads."""
        if isinstance(self.recommender, HttpRecommender):
            self.recommender.close()


def build_simulation(
    settings: SimulatorSettings,
    scenario: Scenario | None = None,
    start_ns: int | None = None,
    tick_s: float = 60.0,
    world: World | None = None,
    scenario_origin_ns: int | None = None,
) -> Simulation:
    """World + recommender + engine from settings (deterministic in ``settings.seed``)."""
    if scenario is None:
        scenario = Scenario.load(settings.scenario) if settings.scenario else Scenario()
    world = world or World.build(world_config(settings))
    rec = make_recommender(
        settings.target, world, settings.reco_timeout_ms, settings.reco_host, settings.seed + 5
    )
    cfg = EngineConfig(
        seed=settings.seed,
        start_ns=parse_start(settings.start) if start_ns is None else start_ns,
        tick_s=tick_s,
        sessions_per_user_day=settings.sessions_per_user_day,
        new_accounts_per_day=settings.new_accounts_per_day,
        reco_share=settings.reco_share if rec is not None else 0.0,
        scenario=scenario,
        scenario_origin_ns=scenario_origin_ns,
        behaviour=settings.behaviour(),
    )
    return Simulation(world, Engine(world, cfg, rec), rec)


def make_sink(settings: SimulatorSettings, out: str | None, kafka_mode: str = "fast") -> Sink:
    """``out`` = a file path, ``-`` for stdout; otherwise Kafka from the settings."""
    if out == "-":
        return FileSink(sys.stdout)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        return FileSink(out)
    if not settings.kafka_bootstrap_servers:
        raise ValueError("no output: give --out FILE or --kafka HOST:PORT")
    ks = KafkaSettings(kafka_bootstrap_servers=settings.kafka_bootstrap_servers)
    return KafkaSink(ks, settings.topic, mode=kafka_mode)


class _Meter:
    """Moves engine counters into Prometheus metrics after every batch."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.kinds = np.zeros(4, np.int64)
        self.status: dict[int, int] = {}
        self.malformed: dict[str, int] = {}

    def update(self, batch: Batch) -> None:
        e = self.engine
        delta = e.kind_counts - self.kinds
        self.kinds = e.kind_counts.copy()
        for k, d in zip(_KINDS, delta.tolist(), strict=True):
            if d:
                metrics.LINES.labels(k).inc(d)
        for _, kind in batch.labels:
            metrics.INJECTED.labels(kind).inc()
        for s, c in e.reco_status.items():
            if c != self.status.get(s, 0):
                metrics.RECO_CALLS.labels(str(s)).inc(c - self.status.get(s, 0))
                self.status[s] = c
        for r, c in e.malformed_answers.items():
            if c != self.malformed.get(r, 0):
                metrics.RECO_MALFORMED.labels(r).inc(c - self.malformed.get(r, 0))
                self.malformed[r] = c
        for ms in e.reco_ms:
            metrics.RECO_SECONDS.observe(ms / 1000)
        e.reco_ms.clear()
        metrics.SIM_TIME.set(batch.end_ns / NS)


def backfill(
    sim: Simulation,
    sink: Sink,
    days: float,
    run_dir: str | Path | None,
    max_lines: int | None = None,
    progress: bool | None = None,
    save_model: bool = True,
) -> dict[str, Any]:
    """Simulate ``days`` as fast as possible into ``sink``; return the run summary."""
    e = sim.engine
    truth = TruthWriter(run_dir, sim.world, save_model) if run_dir else None
    until = e.cfg.start_ns + int(days * DAY_S * NS)
    n_ticks = int((until - e.cfg.start_ns) // e.tick_ns)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=n_ticks, unit="tick", disable=not show, file=sys.stderr)
    meter = _Meter(e)
    # SIGTERM/SIGINT ask the loop to finish cleanly (flush, write the truth).
    stop = GracefulStop() if show else GracefulStop(signals=())
    t0 = time.perf_counter()
    lines = 0
    try:
        for batch in e.run(until_ns=until, max_lines=max_lines):
            sink.write(batch.lines, batch.users)
            if truth:
                truth.record(batch)
            meter.update(batch)
            lines += len(batch.lines)
            bar.update(1)
            bar.set_postfix(lines=lines, refresh=False)
            if stop.is_set():
                break
    finally:
        sink.close()
        bar.close()
        sim.close()
    wall = time.perf_counter() - t0
    summary = {**e.summary(), "lines_total": lines, "wall_seconds": round(wall, 3)}
    summary["lines_per_second"] = round(lines / wall) if wall > 0 else None
    if truth:
        truth.close(e)
    log.info("backfill done", extra={"lines": lines, "wall_seconds": round(wall, 2)})
    return summary


DAY_S = 86_400


LIVE_SESSIONS_PER_S: Final = 5.0
"""Sessions per wall second a live run aims for when no speed is given."""
MAX_AUTO_SPEED: Final = 3_600.0


def auto_speed(n_users: int, sessions_per_user_day: float) -> float:
    """Real time for a big world; faster for a small one, so a short run still has traffic.

    A full world (1M users) starts ~14 sessions a second at real time; 1,000 users start one a
    minute, and a 30-second run would ask for no recommendation at all.  The speed is raised
    until the world starts ``LIVE_SESSIONS_PER_S`` sessions per wall second (at most 3600x).
    """
    per_s = max(n_users, 1) * sessions_per_user_day / DAY_S
    return float(min(MAX_AUTO_SPEED, max(1.0, round(LIVE_SESSIONS_PER_S / per_s))))


def now_start_ns() -> int:
    """The current UTC time, whole seconds, as ns since the epoch."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)
    return parse_start(now.isoformat())


def live(
    sim: Simulation,
    sink: Sink,
    run_dir: str | Path | None,
    rate: float,
    speed: float,
    duration_s: float | None = None,
    max_lines: int | None = None,
    clock: Any = time.monotonic,
    sleep: Any = time.sleep,
    warmup_s: float = 0.0,
    tally: OnlineTally | None = None,
) -> dict[str, Any]:
    """Emit events as simulated time passes ``speed`` times faster than the wall clock.

    The engine should start ``warmup_s`` before now: that stretch is simulated silently so
    the stream opens with sessions in progress.  A bucket is written once its end time has
    passed (at ``speed`` 1 no line is stamped in the future); ``rate`` caps lines per second.
    Every line written also goes to ``tally``, to judge the recommender at the end.
    """
    e = sim.engine
    if warmup_s > 0:
        e.warm_up(e.cfg.start_ns + int(warmup_s * NS))
    sim0 = e.now_ns
    truth = TruthWriter(run_dir, sim.world) if run_dir else None
    meter = _Meter(e)
    stop = GracefulStop() if sys.stderr.isatty() or duration_s is None else GracefulStop(signals=())
    wall0 = clock()
    sent = 0
    try:
        for batch in e.run(max_lines=max_lines):
            due = wall0 + (batch.end_ns - sim0) / NS / speed
            while (left := due - clock()) > 0 and not stop.is_set():
                sleep(min(left, 0.2))
            chunk = max(1, int(rate * 0.05))
            for i in range(0, len(batch.lines), chunk):
                # Rate cap: never more than ``rate`` lines per second since the start.
                while sent > rate * (clock() - wall0) and not stop.is_set():
                    sleep(0.01)
                sink.write(batch.lines[i : i + chunk], batch.users[i : i + chunk])
                sent += min(chunk, len(batch.lines) - i)
            if isinstance(sink, KafkaSink | FileSink):
                sink.flush()  # live consumers should see lines now, not when a batch fills
            if truth:
                truth.record(batch)
            if tally is not None:
                tally.add(batch.lines)
            meter.update(batch)
            metrics.LAG.set(max(0.0, clock() - due))
            if stop.is_set() or (duration_s is not None and clock() - wall0 >= duration_s):
                break
    finally:
        sink.close()
        sim.close()
    summary = {**e.summary(), "lines_total": sent, "wall_seconds": round(clock() - wall0, 3)}
    if truth:
        truth.close(e)
    return summary
