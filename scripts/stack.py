"""The whole Marquee stack on loopback, for ``make demo`` and ``make up`` / ``make down``.

Kafka (KRaft), the simulator's user/movie API, ingest of both topics (``movielog`` and
``exposures``) consuming while the simulator backfills, one training run, recommender
``stable`` (control) and ``canary`` (treatment) serving two different registered models, the
router splitting 50/50 (trusting the simulated clock), the monitor acting on the experiment
file and the registry, Prometheus scraping every service, and the simulator streaming live
through the router.

Every process is started in its own session and recorded (pid and start time) in
``<run>/pids.json``; ``down`` stops exactly those (and the Kafka and Prometheus its scripts
started), so it works from a fresh shell, twice in a row, and never touches anyone else's.

    python -m scripts.stack up      # start it all, leave it running, print the addresses
    python -m scripts.stack down    # stop everything ``up`` (or ``make demo --keep``) started
    python -m scripts.stack status  # what is recorded and whether it still runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import requests

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
RUN = ROOT / ".run" / "demo"
START = "2026-03-02T00:00:00"
# The served model is chosen on the validation period; the test period only reports.
SELECT = "val.ranking.ndcg@20"
NDCG = "test.ranking.ndcg@20"
ARMS = ("control", "treatment")
TRUTH_HOURS = 24.0
"""Simulated hours the demo's truth serves each arm (``benchmarks/bench_lift.py`` serves its
arms as long): a day of the world's users, about 6,500 lists."""


def say(msg: str) -> None:
    """Announce a step."""
    print(f"\n==> {msg}", flush=True)


def info(msg: str) -> None:
    """A detail of the current step."""
    print(f"    {msg}", flush=True)


@dataclass(frozen=True)
class Ports:
    """Loopback ports of the stack; the defaults leave a developer's 19092/19090 alone."""

    kafka: int = 19192  # and kafka + 1 for the KRaft controller
    sim_api: int = 18000
    ingest: int = 18001
    router: int = 18082  # where the streaming service calls: the router, not one recommender
    stable: int = 18083
    canary: int = 18084
    monitor: int = 18090
    prometheus: int = 19190

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """Ten consecutive ports from ``base`` (tests pick a free range)."""
        return cls(base, base + 2, base + 3, base + 4, base + 5, base + 6, base + 7, base + 8)

    def arm(self, arm: str) -> int:
        """Port of an arm's recommender (control is ``stable``, treatment ``canary``)."""
        return self.stable if arm == "control" else self.canary

    def addresses(self) -> dict[str, str]:
        """What a person opens, by name."""
        return {
            "experiment page (monitor)": f"http://127.0.0.1:{self.monitor}/",
            "monitor JSON API": f"http://127.0.0.1:{self.monitor}/api/experiment",
            "Prometheus": f"http://127.0.0.1:{self.prometheus}/",
            "router (GET /recommend/<user>)": f"http://127.0.0.1:{self.router}/recommend/42",
            "recommender stable (control)": f"http://127.0.0.1:{self.stable}/recommend/42",
            "recommender canary (treatment)": f"http://127.0.0.1:{self.canary}/recommend/42",
            "user/movie API (simulator)": f"http://127.0.0.1:{self.sim_api}/user/42",
            "ingest stats": f"http://127.0.0.1:{self.ingest}/stats",
            "Kafka bootstrap": f"127.0.0.1:{self.kafka}",
        }

    def scrape_targets(self) -> dict[str, str]:
        """Prometheus jobs: every service with a ``/metrics``."""
        return {
            "simulator": f"127.0.0.1:{self.sim_api}",
            "ingest": f"127.0.0.1:{self.ingest}",
            "recommender-stable": f"127.0.0.1:{self.stable}",
            "recommender-canary": f"127.0.0.1:{self.canary}",
            "router": f"127.0.0.1:{self.router}",
            "monitor": f"127.0.0.1:{self.monitor}",
        }


@dataclass
class World:
    """The simulated world and how the stack is fed (``benchmarks/bench_lift.py`` measures it).

    Four weeks of history: what a user watched over 30-40 sessions is what a personalized
    model learns taste from (a world of a few days is a cold-start world, where popularity is
    as good as any model).  New accounts arrive at 1 % of the users a day, a realistic rate
    that still gives the cold-start path users to serve; the simulator's default (2,000 a day,
    meant for a million users) would outnumber the users ten to one within four weeks and make
    the stream 85M lines, too many to ingest in a demo.  Measured with ``bench_lift.py``
    (paired, offline and online): 3,000 users x 4 weeks 1.25x popularity offline, 8 weeks
    1.32x but 35 % of the online gap to the oracle; 5,000 users x 4 weeks comes closest to
    issue 13's goals (1.30x offline on test, 39-42 % of the online gap in two runs).
    """

    users: int = 5_000
    movies: int = 2_000
    days: float = 28
    malformed_rate: float = 0.002
    seed: int = 42
    new_accounts_per_day: float = 50

    def flags(self) -> list[str]:
        """The simulator's world flags (the same world in every simulator command)."""
        return ["--seed", str(self.seed), "--users", str(self.users), "--movies", str(self.movies)]

    def stream_flags(self) -> list[str]:
        """How the world changes over time, for every simulator command that streams."""
        return ["--new-accounts-per-day", f"{self.new_accounts_per_day:g}"]


@dataclass
class Arms:
    """Which registered model each arm serves, and why."""

    control: str
    treatment: str
    why: str
    versions: dict[str, str] = field(default_factory=dict)

    def model(self, arm: str) -> str:
        """Registry model name of ``arm``."""
        return self.control if arm == "control" else self.treatment


# -- processes ----------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) of ``pid`` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[1] == pgid and st[0] != "Z":
                out.append(int(entry.name))
    return out


class Processes:
    """Background services, each in its own session, logging to ``<logs>/<name>.log``.

    Each start is recorded in ``pids.json`` with the process's start time, so a later ``down``
    (another process) stops exactly these and never a recycled pid.
    """

    def __init__(self, run: Path) -> None:
        self.run = run
        self.logs = run / "logs"
        self.pidfile = run / "pids.json"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def recorded(self) -> dict[str, dict[str, Any]]:
        """The recorded processes by name."""
        if not self.pidfile.is_file():
            return {}
        data: dict[str, dict[str, Any]] = json.loads(self.pidfile.read_text())
        return data

    def _record(self, name: str, pid: int | None) -> None:
        data = self.recorded()
        if pid is None:
            data.pop(name, None)
        else:
            st = _stat(pid)
            data[name] = {"pid": pid, "start": st[2] if st else None}
        self.pidfile.write_text(json.dumps(data, indent=2) + "\n")

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        """Start ``argv`` in the background with its output in ``<logs>/<name>.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{name}.log").open("ab")
        self._files.append(log)
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **(env or {})},
            cwd=ROOT,
            start_new_session=True,  # its own group: stopping it stops gunicorn's workers too
        )
        self._record(name, self.procs[name].pid)

    def check(self, name: str) -> None:
        """Fail loudly if a service died."""
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def alive(self, name: str) -> bool:
        """Whether the recorded process ``name`` still runs."""
        entry = self.recorded().get(name)
        return entry is not None and _is_ours(entry)

    def stop(self, names: Iterable[str] | None = None, timeout_s: float = 30) -> list[str]:
        """SIGTERM recorded process groups (they flush and exit), then SIGKILL what is left."""
        recorded = self.recorded()
        chosen = list(recorded) if names is None else [n for n in names if n in recorded]
        groups = {n: recorded[n]["pid"] for n in chosen if _is_ours(recorded[n])}
        for pgid in groups.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(group_members(g) for g in groups.values()):
            for proc in self.procs.values():
                proc.poll()  # reap our own children so they do not linger as zombies
            time.sleep(0.2)
        for pgid in groups.values():
            if group_members(pgid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        for name in chosen:
            if name in self.procs:
                proc = self.procs.pop(name)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
            self._record(name, None)
        return chosen

    def close_logs(self) -> None:
        """Close this process's handles on the log files (the services keep theirs)."""
        for f in self._files:
            f.close()
        self._files.clear()


def _is_ours(entry: Mapping[str, Any]) -> bool:
    """The recorded pid still runs and is the same process (same start time), not a reuse."""
    st = _stat(int(entry["pid"]))
    return st is not None and st[0] != "Z" and (entry.get("start") in (None, st[2]))


# -- the stack ----------------------------------------------------------------------------------


class Stack:
    """The services of one run folder, started step by step and stopped together."""

    def __init__(self, run: Path = RUN, ports: Ports | None = None, world: World | None = None):
        self.run = run
        self.ports = ports or Ports()
        self.world = world or World()
        self.procs = Processes(run)
        self.logs = run / "logs"
        self.store = run / "store"
        self.registry = run / "models"
        self.experiment = run / "experiment.yaml"

    # scripts with pid files of their own
    def _kafka_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_PORT": str(self.ports.kafka),
            "KAFKA_RUN_DIR": str(self.run / "kafka"),
        }

    def _prom_env(self) -> dict[str, str]:
        targets = ",".join(f"{k}={v}" for k, v in self.ports.scrape_targets().items())
        return {
            **os.environ,
            "PROM_PORT": str(self.ports.prometheus),
            "PROM_RUN_DIR": str(self.run / "prometheus"),
            "PROM_TARGETS": targets,
            "PROM_SCRAPE_INTERVAL": "2s",
        }

    @property
    def backfill_state(self) -> Path:
        """The simulator's state where the backfill ended (truth and live runs go on from it)."""
        from services.simulator.engine import state_file

        return state_file(self.run / "sim")

    @property
    def bootstrap(self) -> str:
        """Kafka's client address."""
        return f"127.0.0.1:{self.ports.kafka}"

    def down(self) -> list[str]:
        """Stop everything recorded under the run folder; safe to call again."""
        stopped = self.procs.stop()
        for script, env in (("kafka.sh", self._kafka_env()), ("prometheus.sh", self._prom_env())):
            if (self.run / script.split(".")[0]).is_dir():
                out = subprocess.run(
                    [str(ROOT / "scripts" / script), "stop"],
                    env=env,
                    check=False,
                    capture_output=True,
                    text=True,
                )
                if "stopped" in out.stderr:
                    stopped.append(script.split(".")[0])
        self.procs.close_logs()
        return stopped

    def fresh(self) -> None:
        """Stop what an earlier run left and start from an empty run folder."""
        if self.run.exists():
            self.down()
            shutil.rmtree(self.run)
        self.logs.mkdir(parents=True)

    def marquee(self, *args: str, env: Mapping[str, str] | None = None, log: str = "") -> str:
        """Run a ``marquee`` subcommand to completion; return its stdout."""
        name = log or args[0]
        with (self.logs / f"{name}.log").open("ab") as err:
            out = subprocess.run(
                [str(VENV_BIN / "marquee"), *args],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **(env or {})},
                cwd=ROOT,
                check=False,
            )
        if out.returncode != 0:
            tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"marquee {' '.join(args)} failed ({out.returncode}):\n{tail}")
        return out.stdout.decode()

    def wait_ready(self, url: str, name: str, timeout_s: float = 120) -> None:
        """Poll ``url`` until it answers 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.procs.check(name)
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    return
            time.sleep(0.5)
        raise RuntimeError(f"{name} not ready at {url} after {timeout_s:.0f} s")

    # -- steps --------------------------------------------------------------------------------

    def start_kafka(self) -> None:
        """Apache Kafka (KRaft) with the topics ``movielog`` and ``exposures``."""
        say(f"starting Apache Kafka (KRaft, official jars via Maven) on {self.bootstrap}")
        subprocess.run([str(ROOT / "scripts/kafka.sh"), "start"], env=self._kafka_env(), check=True)

    def start_sim_api(self) -> None:
        """The simulator's user/movie API (ingest enriches from it, recommenders segment)."""
        say(f"starting the simulator's user/movie API on 127.0.0.1:{self.ports.sim_api}")
        argv = [str(VENV_BIN / "marquee"), "sim", "api", *self.world.flags()]
        argv += ["--host", "127.0.0.1", "--port", str(self.ports.sim_api)]
        self.procs.start("sim-api", argv)
        self.wait_ready(f"http://127.0.0.1:{self.ports.sim_api}/readyz", "sim-api")

    def backfill(self) -> dict[str, Any]:
        """``days`` of history into ``movielog``, some lines malformed on purpose."""
        w = self.world
        say(f"backfilling {w.days:g} days of a {w.users:,}-user × {w.movies:,}-movie world")
        t0 = time.monotonic()
        self.marquee(
            "sim", "backfill", "--days", str(w.days), "--start", START, *w.flags(),
            "--kafka", self.bootstrap, "--run-dir", str(self.run / "sim"),
            "--target", "builtin:popularity", "--malformed-rate", str(w.malformed_rate),
            *w.stream_flags(),
            log="sim-backfill",
        )  # fmt: skip
        seconds = time.monotonic() - t0
        lines = sum(end_offsets(self.bootstrap, "movielog").values())
        info(f"{lines:,} lines in {seconds:.1f} s ({lines / seconds:,.0f} lines/s)")
        return {"lines": lines, "seconds": round(seconds, 1)}

    def ingest_env(self) -> dict[str, str]:
        """Ingest's settings: both topics into one store (the monitor joins them)."""
        return {
            "MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "MARQUEE_INGEST_TOPICS": "movielog,exposures",
            "MARQUEE_INGEST_STORE_PATH": str(self.store),
            "MARQUEE_INGEST_HTTP_HOST": "127.0.0.1",
            "MARQUEE_INGEST_HTTP_PORT": str(self.ports.ingest),
            "MARQUEE_INGEST_ENRICH_URL": f"http://127.0.0.1:{self.ports.sim_api}",
            "MARQUEE_INGEST_FLUSH_INTERVAL_S": "2",
            "MARQUEE_INGEST_GROUP_ID": "marquee-demo-ingest",
        }

    def start_ingest(self) -> None:
        """Ingest running: it consumes ``movielog`` while the backfill produces it, as in prod."""
        say(f"ingesting movielog and exposures exactly once (ops on :{self.ports.ingest})")
        self.procs.start("ingest", [str(VENV_BIN / "marquee"), "ingest", "run"], self.ingest_env())
        self.wait_ready(f"http://127.0.0.1:{self.ports.ingest}/healthz", "ingest")

    def catch_up(self, started: float, backfilled: float) -> dict[str, Any]:
        """Wait until the backfill is durable in the store (ingest started at ``started``)."""
        say("waiting for ingest to make the whole backfill durable")
        stats = self.wait_ingested("movielog")
        done = time.monotonic()
        info(f"stored rows: {json.dumps(stats.get('rows', {}))}")
        quarantined = quarantine_counts(self.store)
        info(f"quarantined with a reason: {json.dumps(quarantined)}")
        info(
            f"caught up {done - backfilled:.1f} s after the backfill ended"
            f" ({done - started:.1f} s since ingest started)"
        )
        return {
            "seconds": round(done - started, 1),
            "after_backfill_seconds": round(done - backfilled, 1),
            "rows": stats.get("rows"),
            "quarantined": quarantined,
        }

    def wait_ingested(self, topic: str, timeout_s: float = 900) -> dict[str, Any]:
        """Wait until ingest has made every line of ``topic`` durable; return its stats."""
        from tqdm import tqdm

        ends = end_offsets(self.bootstrap, topic)
        deadline = time.monotonic() + timeout_s
        url = f"http://127.0.0.1:{self.ports.ingest}/stats"
        quiet = not sys.stdout.isatty()
        with tqdm(total=sum(ends.values()), unit=" lines", desc="    ingest", disable=quiet) as bar:
            while time.monotonic() < deadline:
                self.procs.check("ingest")
                with contextlib.suppress(requests.RequestException):
                    stats = requests.get(url, timeout=5).json()
                    by_topic = stats.get("durable_offsets", {}).get(topic, {})
                    durable = {int(p): o for p, o in by_topic.items()}
                    done = sum(min(durable.get(p, 0), e) for p, e in ends.items())
                    bar.update(done - bar.n)
                    if all(durable.get(p, 0) >= e for p, e in ends.items()):
                        return dict(stats)
                time.sleep(1)
        raise RuntimeError(f"ingest did not catch up with {topic} in time")

    def train(self) -> dict[str, Any]:
        """Snapshot, then one training run registering every family on ``canary``."""
        until = datetime.fromisoformat(START) + timedelta(days=self.world.days)
        snapshot = self.run / "snapshots" / until.strftime("%Y%m%dT%H%M%S")
        say(f"writing the training snapshot until {until.isoformat()}")
        self.marquee(
            "ingest", "snapshot", "--until", until.isoformat(), "--out", str(snapshot),
            "--store", str(self.store), "--enrich-url", f"http://127.0.0.1:{self.ports.sim_api}",
            env=self.ingest_env(), log="ingest-snapshot",
        )  # fmt: skip
        manifest = json.loads((snapshot / "manifest.json").read_text())
        info(f"row counts {manifest['row_counts']}, content hash {manifest['content_hash'][:12]}")
        say("training, evaluating and registering every family on the canary channel")
        t0 = time.monotonic()
        # As the retraining CronJob: new versions land on canary; an experiment promotes them.
        self.marquee(
            "train", "--snapshot", str(snapshot), "--register", "canary",
            "--registry", str(self.registry), "--work-dir", str(self.run / "trainer"),
            "--reports", str(self.run / "reports"), log="train",
        )  # fmt: skip
        seconds = time.monotonic() - t0
        info(f"trained in {seconds:.1f} s; report: {self.run / 'reports' / 'report.md'}")
        return {"seconds": round(seconds, 1)}

    def offline_metrics(self) -> dict[str, dict[str, Any]]:
        """Each registered family's metrics (its canary version: this run's training)."""
        from services.common.artifacts import Registry

        reg = Registry(self.registry)
        out: dict[str, dict[str, Any]] = {}
        for name in reg.names():
            version = reg.channel(name, "canary") or reg.channel(name, "stable")
            if version is not None:
                out[name] = reg.load(name, version).manifest.metrics
        return out

    def set_control(self, model: str) -> str:
        """Make ``model``'s trained version the incumbent: its ``stable`` channel."""
        from services.common.artifacts import Registry

        reg = Registry(self.registry)
        version = reg.channel(model, "canary") or reg.channel(model, "stable")
        if version is None:
            raise RuntimeError(f"{model} has no registered version")
        if reg.channel(model, "stable") != version:
            reg.set_channel(model, "stable", version)
        return version

    def start_recommender(self, arm: str, model: str) -> None:
        """One gunicorn recommender following ``model``'s channel (stable or canary)."""
        ref = "stable" if arm == "control" else "canary"
        port = self.ports.arm(arm)
        name = f"recommender-{ref}"
        info(f"{name}: {model}@{ref} on 127.0.0.1:{port} ({arm})")
        argv = [
            str(VENV_BIN / "marquee"), "serve", "--registry", str(self.registry), "--model", model,
            "--ref", ref, "--bind", f"127.0.0.1:{port}", "--workers", "1",
            "--users-api", f"http://127.0.0.1:{self.ports.sim_api}",
            "--metrics-dir", str(self.run / f"{name}-metrics"), "--poll-interval", "1",
        ]  # fmt: skip
        self.procs.start(name, argv)
        self.wait_ready(f"http://127.0.0.1:{port}/readyz", name)

    def start_recommenders(self, arms: Arms) -> None:
        """Recommender ``stable`` (control) and ``canary`` (treatment)."""
        say("starting recommender stable (control) and canary (treatment) under gunicorn")
        for arm in ARMS:
            self.start_recommender(arm, arms.model(arm))

    def restart_recommender(self, arm: str, model: str) -> None:
        """Serve another model on ``arm``'s port."""
        ref = "stable" if arm == "control" else "canary"
        self.procs.stop([f"recommender-{ref}"])
        self.start_recommender(arm, model)

    def write_experiment(self, arms: Arms, policy: Mapping[str, Any]) -> dict[str, Any]:
        """The experiment file the router serves and the monitor rewrites."""
        from services.common.experiment import validate_config
        from services.monitor.actions import FileConfigStore

        sample = requests.get(f"http://127.0.0.1:{self.ports.stable}/recommend/1", timeout=5)
        doc = experiment_doc(arms, self.ports, sample.text.split(",")[:5], policy)
        FileConfigStore(self.experiment).write(validate_config(doc, str(self.experiment)))
        return doc

    def start_router(self, workers: int = 2) -> None:
        """The router: 50/50 split, exposures to Kafka, stamped with the simulated clock."""
        say(f"starting the router on 127.0.0.1:{self.ports.router} (exposures -> Kafka)")
        argv = [
            str(VENV_BIN / "marquee"), "route", "serve", "--config", str(self.experiment),
            "--bind", f"127.0.0.1:{self.ports.router}", "--kafka", self.bootstrap,
            "--metrics-dir", str(self.run / "router-metrics"), "--workers", str(workers),
        ]  # fmt: skip
        env = {
            # The simulated world runs faster than the wall clock: exposures must carry its time.
            "MARQUEE_ROUTER_TRUST_CLIENT_TIME": "true",
            # Two cores run the whole stack: a process can stall for a few hundred ms, so an
            # arm gets most of the client's 600 ms, and a short stall does not open its circuit
            # for long (an open circuit sends every request of the arm to control).
            "MARQUEE_ROUTER_UPSTREAM_TIMEOUT_S": "0.45",
            "MARQUEE_ROUTER_DEADLINE_S": "0.5",
            "MARQUEE_ROUTER_BREAKER_FAILURES": "20",
            "MARQUEE_ROUTER_BREAKER_COOLDOWN_S": "1",
            "MARQUEE_ROUTER_ACCESS_LOG": "false",
        }
        self.procs.start("router", argv, env)
        self.wait_ready(f"http://127.0.0.1:{self.ports.router}/readyz", "router")

    def start_monitor(self, interval_s: float = 2.0) -> None:
        """The monitor: evaluates the store, decides by the file's policy, acts on file+registry."""
        say(f"starting the monitor on 127.0.0.1:{self.ports.monitor} (acts, not dry-run)")
        argv = [
            str(VENV_BIN / "marquee"), "monitor", "run", "--config", str(self.experiment),
            "--store", str(self.store), "--registry", str(self.registry),
            "--db", f"sqlite:///{self.run / 'monitor' / 'history.sqlite3'}",
            "--checkpoint-dir", str(self.run / "monitor" / "state"),
            "--port", str(self.ports.monitor), "--interval", str(interval_s),
        ]  # fmt: skip
        (self.run / "monitor").mkdir(parents=True, exist_ok=True)
        self.procs.start("monitor", argv)
        self.wait_ready(f"http://127.0.0.1:{self.ports.monitor}/healthz", "monitor")

    def start_prometheus(self) -> None:
        """Prometheus (Debian's package) scraping every service every 2 s."""
        say(f"starting Prometheus on 127.0.0.1:{self.ports.prometheus}, scraping every service")
        script = str(ROOT / "scripts" / "prometheus.sh")
        subprocess.run([script, "start"], env=self._prom_env(), check=True)

    def start_live(self, speed: float, duration_s: float | None, rate: float = 20_000) -> None:
        """The simulator streaming live through the router at ``speed`` x the wall clock."""
        argv = [
            str(VENV_BIN / "marquee"), "sim", "live", *self.world.flags(),
            *self.world.stream_flags(),
            "--kafka", self.bootstrap, "--run-dir", str(self.run / "live"),
            "--resume", str(self.run / "sim"),  # the backfill's users, remembering its history
            "--target", f"http://127.0.0.1:{self.ports.router}", "--reco-share", "1.0",
            "--speed", str(speed), "--rate", str(rate), "--warmup-hours", "1",
            "--reco-host", f"127.0.0.1:{self.ports.router}",
        ]  # fmt: skip
        if duration_s is not None:
            argv += ["--duration", str(duration_s)]
        self.procs.start("sim-live", argv)

    def up_to_models(self) -> dict[str, Any]:
        """Kafka, the API, backfill, ingest and training: everything before the arms."""
        summary: dict[str, Any] = {}
        self.start_kafka()
        self.start_sim_api()
        # Ingest consumes while the simulator produces, as it would in production: the backfill
        # overlaps ingest (the slower of the two) instead of running before it.
        started = time.monotonic()
        self.start_ingest()
        summary["backfill"] = self.backfill()
        summary["ingest"] = self.catch_up(started, time.monotonic())
        summary["train"] = self.train()
        return summary

    def serve_experiment(self, arms: Arms, policy: Mapping[str, Any]) -> dict[str, Any]:
        """The experiment file, the router, the monitor and Prometheus (arms already up)."""
        doc = self.write_experiment(arms, policy)
        info(f"experiment {doc['experiment']}: {self.experiment}")
        self.start_router()
        self.start_monitor()
        self.start_prometheus()
        return doc


# -- pure helpers -------------------------------------------------------------------------------


def find_metric(metrics: Any, path: str) -> float | None:
    """The number at a dotted ``path`` (e.g. ``test.ranking.ndcg@20``) of a metrics document."""
    node = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def choose_served(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """The model with the best validation NDCG@20 (ties: the first name in sorted order).

    Choosing on the test period would make the test number that the demo reports optimistic.
    """
    if not metrics:
        raise RuntimeError("the trainer registered no model")
    scored = {name: find_metric(m, SELECT) for name, m in metrics.items()}
    # No validation number (e.g. a family without one): never chosen over one that has it.
    value = {name: -1.0 if v is None else v for name, v in scored.items()}
    return max(sorted(value), key=lambda n: value[n])


def choose_arms(metrics: Mapping[str, Mapping[str, Any]], baseline: str = "popularity") -> Arms:
    """Treatment: the best model on validation; control: ``baseline`` (the incumbent).

    When the baseline itself is best on validation, the treatment is the best other model.
    """
    served = choose_served(metrics)
    if served != baseline and baseline in metrics:
        return Arms(baseline, served, f"{served} is best on validation; {baseline} is the baseline")
    others = {n: m for n, m in metrics.items() if n != baseline}
    if not others:
        raise RuntimeError("need at least two registered models for an experiment")
    challenger = choose_served(others)
    return Arms(
        baseline,
        challenger,
        f"{baseline} is best on validation; {challenger} (next best) challenges it",
    )


def weakest(metrics: Mapping[str, Mapping[str, Any]], exclude: Iterable[str]) -> str | None:
    """The model with the lowest validation NDCG@20, other than ``exclude``."""
    skip = set(exclude)
    scored = {
        n: v
        for n, m in metrics.items()
        if n not in skip and (v := find_metric(m, SELECT)) is not None
    }
    return min(sorted(scored), key=lambda n: scored[n]) if scored else None


def experiment_doc(
    arms: Arms, ports: Ports, fallback: list[str], policy: Mapping[str, Any]
) -> dict[str, Any]:
    """The experiment config: both arms at 50 %, everyone exposed, the monitor's policy."""
    name = f"{arms.control}-vs-{arms.treatment}"
    return {
        "experiment": name,
        "salt": f"{name}-demo",
        "mode": "split",
        "status": "running",
        "exposure": 1.0,
        "control": "control",
        "arms": [
            {
                "name": "control",
                "url": f"http://127.0.0.1:{ports.stable}",
                "weight": 50,
                "model": arms.control,
                "channel": "stable",
            },
            {
                "name": "treatment",
                "url": f"http://127.0.0.1:{ports.canary}",
                "weight": 50,
                "model": arms.treatment,
                "channel": "canary",
            },
        ],
        "fallback": fallback,
        "policy": dict(policy),
    }


def registry_channels(registry: Path, models: Iterable[str]) -> dict[str, dict[str, str | None]]:
    """``{model: {channel: version}}`` for the given models."""
    from services.common.artifacts import CHANNELS, Registry

    reg = Registry(registry)
    return {m: {c: reg.channel(m, c) for c in CHANNELS} for m in models}


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Log-end offset of every partition of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        consumer.close()


def quarantine_counts(store_path: Path) -> dict[str, int]:
    """Quarantined lines by reason, read from the store."""
    from services.common.store import EventStoreReader

    reasons = EventStoreReader(store_path).read("quarantine")["reason"].to_pylist()
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def monitor_api(ports: Ports, path: str) -> dict[str, Any] | None:
    """A JSON document of the monitor's API, or None while it has none."""
    with contextlib.suppress(requests.RequestException, ValueError):
        r = requests.get(f"http://127.0.0.1:{ports.monitor}{path}", timeout=5)
        if r.status_code == 200:
            doc: dict[str, Any] = r.json()
            return doc
    return None


def wait_for(pred: Callable[[], Any], timeout_s: float, every_s: float = 1.0) -> Any:
    """``pred()``'s first truthy value within ``timeout_s``, else None."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every_s)
    return None


DEFAULT_POLICY: dict[str, Any] = {
    "metric": "conversion",
    "alpha": 0.05,
    "min_users": 500,
    "max_users": 2500,  # half the demo world's users: every user of the world, split 50/50
    "ramp": [],
    # Guardrails judge the treatment against control (the defaults' margins and one-sided
    # tests); the absolute backstops below stay loose because two busy cores running the whole
    # stack stall both arms now and then (such a burst alone reached a 5 % fallback rate over
    # the first few hundred requests), and a stall both arms share is not the treatment's fault.
    "guardrails": {
        "max_latency_p99_ms": 1000,
        "max_fallback_rate": 0.25,
        "max_error_rate": 0.05,
        "min_requests": 1000,
    },
    "promote_to": "stable",
}


# -- command line -------------------------------------------------------------------------------


def _up(stack: Stack, speed: float) -> int:
    stack.fresh()
    t0 = time.monotonic()
    stack.up_to_models()
    metrics = stack.offline_metrics()
    arms = choose_arms(metrics)
    arms.versions = {"control": stack.set_control(arms.control)}
    info(f"control {arms.control}@stable, treatment {arms.treatment}@canary: {arms.why}")
    stack.start_recommenders(arms)
    stack.serve_experiment(arms, DEFAULT_POLICY)
    say(f"the simulator streams live through the router at {speed:g}x (until 'make down')")
    stack.start_live(speed, None)
    time.sleep(3)
    stack.procs.check("sim-live")
    say(f"the stack is up ({time.monotonic() - t0:.0f} s); stop it with 'make down'")
    for what, where in stack.ports.addresses().items():
        info(f"{what:<32} {where}")
    info(f"logs in {stack.logs}, pids in {stack.procs.pidfile}")
    stack.procs.close_logs()
    return 0


def _status(stack: Stack) -> int:
    rec = stack.procs.recorded()
    if not rec:
        print("nothing recorded: the stack is down")
        return 3
    for name, entry in rec.items():
        print(f"{name:<22} pid {entry['pid']:<8} {'running' if _is_ours(entry) else 'gone'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``up``, ``down`` or ``status`` of the local stack."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=["up", "down", "status"])
    ap.add_argument("--run-dir", type=Path, default=RUN, help="run folder (default .run/demo)")
    ap.add_argument("--speed", type=float, default=60, help="simulated seconds per wall second")
    defaults = World()
    ap.add_argument("--users", type=int, default=defaults.users, help="users in the world")
    ap.add_argument("--movies", type=int, default=defaults.movies, help="movies in the catalog")
    ap.add_argument("--days", type=float, default=defaults.days, help="days of history")
    ap.add_argument("--port-base", type=int, help="ten consecutive ports from here")
    args = ap.parse_args(argv)
    ports = Ports.from_base(args.port_base) if args.port_base else Ports()
    stack = Stack(args.run_dir, ports, World(args.users, args.movies, args.days))
    if args.command == "down":
        stopped = stack.down()
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    if args.command == "status":
        return _status(stack)
    try:
        return _up(stack, args.speed)
    except BaseException:
        stack.down()
        raise


if __name__ == "__main__":
    sys.exit(main())
