"""``make demo``: the main job end to end on real parts, then a summary of what happened.

1. Apache Kafka (KRaft) and the simulator's user/movie API start on loopback.
2. The simulator backfills ``--days`` (default 3) of history for a ``--users`` × ``--movies``
   world (default 30,000 × 5,000) into Kafka, with ``--malformed-rate`` (0.2 %) of the lines
   malformed on purpose.
3. Ingest consumes it exactly once into the Parquet store, quarantining every malformed line
   with its reason, and writes a training snapshot.
4. The trainer trains, evaluates and registers SVD, KNN, popularity and ALS and the demo prints
   the offline comparison.
5. The recommender serves, under gunicorn, the model with the best NDCG@20 on the validation
   period (the test period only reports).
6. Prometheus scrapes the services while the simulator streams live for ``--live-seconds``,
   asking the recommender for lists and reacting to them; ingest keeps consuming.
7. The demo reports throughput, the quarantine, offline metrics, online latency and the
   15-minute watch rate (``docs/contract.md``) in ``.run/demo/summary.json``.

Everything runs under ``.run/demo`` (logs in ``.run/demo/logs``); it is all stopped at the end
unless ``--keep`` is given.
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
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / ".run" / "demo"
LOGS = RUN / "logs"
VENV_BIN = ROOT / ".venv" / "bin"
# Ports of their own, so a developer's broker (19092) or Prometheus (19090) can keep running.
KAFKA_PORT, API_PORT, INGEST_PORT, RECO_PORT, PROM_PORT = 19192, 18000, 18001, 18082, 19190
# A list is judged 15 simulated minutes after it was served (docs/contract.md): at 60x a minute of
# live traffic is an hour of the world, so three quarters of its lists are decided by the end.
LIVE_SPEED = 60
BOOTSTRAP = f"127.0.0.1:{KAFKA_PORT}"
START = "2026-03-02T00:00:00"
# The served model is chosen on the validation period; the test period only reports.
SELECT = "val.ranking.ndcg@20"
NDCG = "test.ranking.ndcg@20"


def say(msg: str) -> None:
    """Announce a step."""
    print(f"\n==> {msg}", flush=True)


def info(msg: str) -> None:
    """A detail of the current step."""
    print(f"    {msg}", flush=True)


class Processes:
    """Background services of the demo, each logging to a file, all stopped on exit."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``argv`` in the background with its output in ``.run/demo/logs/<name>.log``."""
        log = (LOGS / f"{name}.log").open("ab")
        self._logs.append(log)
        self.procs[name] = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            start_new_session=True,
        )

    def check(self, name: str) -> None:
        """Fail loudly if a service died."""
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (LOGS / f"{name}.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop_all(self) -> None:
        """SIGTERM every service (they flush and exit), then kill what is left."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for log in self._logs:
            log.close()


def marquee(*args: str, env: dict[str, str] | None = None, log: str | None = None) -> str:
    """Run a ``marquee`` subcommand to completion; return its stdout."""
    argv = [str(VENV_BIN / "marquee"), *args]
    with (LOGS / f"{log or args[0]}.log").open("ab") as err:
        out = subprocess.run(
            argv,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", **(env or {})},
            cwd=ROOT,
            check=False,
        )
    if out.returncode != 0:
        tail = (LOGS / f"{log or args[0]}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"marquee {' '.join(args)} failed ({out.returncode}):\n{tail}")
    return out.stdout.decode()


def wait_ready(url: str, procs: Processes, name: str, timeout_s: float = 120) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        procs.check(name)
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"{name} not ready at {url} after {timeout_s:.0f} s")


def end_offsets(topic: str) -> dict[int, int]:
    """Log-end offset of every partition of ``topic``."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        consumer.close()


def wait_ingested(procs: Processes, topic: str, timeout_s: float = 600) -> dict[str, Any]:
    """Wait until ingest has made every line of ``topic`` durable; return its stats."""
    ends = end_offsets(topic)
    total = sum(ends.values())
    deadline = time.monotonic() + timeout_s
    from tqdm import tqdm

    quiet = not sys.stdout.isatty()
    with tqdm(total=total, unit=" lines", desc="    ingest", disable=quiet) as bar:
        while time.monotonic() < deadline:
            procs.check("ingest")
            with contextlib.suppress(requests.RequestException):
                stats = requests.get(f"http://127.0.0.1:{INGEST_PORT}/stats", timeout=5).json()
                by_topic = stats.get("durable_offsets", {}).get(topic, {})
                durable = {int(p): o for p, o in by_topic.items()}
                done = sum(min(durable.get(p, 0), e) for p, e in ends.items())
                bar.update(done - bar.n)
                if all(durable.get(p, 0) >= e for p, e in ends.items()):
                    return dict(stats)
            time.sleep(1)
    raise RuntimeError("ingest did not catch up in time")


def quarantine_counts(store_path: Path) -> dict[str, int]:
    """Quarantined lines by reason, read from the store."""
    from services.common.store import EventStoreReader

    reasons = EventStoreReader(store_path).read("quarantine")["reason"].to_pylist()
    counts: dict[str, int] = {}
    for reason in reasons:
        counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def choose_served(metrics: dict[str, dict[str, Any]]) -> str:
    """The model with the best validation NDCG@20 (ties: the first name in sorted order).

    Choosing on the test period would make the test number that the demo reports optimistic.
    """
    if not metrics:
        raise RuntimeError("the trainer registered no model")
    scored = {name: _find_metric(m, SELECT) for name, m in metrics.items()}
    return max(sorted(scored), key=lambda n: scored[n] if scored[n] is not None else -1.0)


def best_model(registry: Path) -> tuple[str, dict[str, Any]]:
    """The registered family with the best validation NDCG@20 on the stable channel."""
    from services.common.artifacts import Registry

    reg = Registry(registry)
    metrics: dict[str, dict[str, Any]] = {}
    for name in reg.names():
        version = reg.channel(name, "stable")
        if version is not None:
            metrics[name] = reg.load(name, version).manifest.metrics
    name = choose_served(metrics)
    return name, metrics[name]


def offline_table(registry: Path) -> list[str]:
    """One line per registered model: its offline test metrics."""
    from services.common.artifacts import Registry

    reg = Registry(registry)
    rows = [f"{'model':<11} {'val NDCG@20':>11} {'NDCG@20':>8} {'HR@20':>7} {'RMSE':>7}"]
    every: dict[str, dict[str, Any]] = {}
    for name in reg.names():
        version = reg.channel(name, "stable")
        if version is None:
            continue
        m = every[name] = reg.load(name, version).manifest.metrics
        cells = [
            _find_metric(m, k)
            for k in (SELECT, NDCG, "test.ranking.hit_rate@20", "test.rating.rmse")
        ]
        rows.append(
            f"{name:<11} "
            + " ".join(
                f"{c:>{w}.4f}" if c is not None else f"{'n/a':>{w}}"
                for c, w in zip(cells, (11, 8, 7, 7), strict=True)
            )
        )
    if every and "popularity" in every:
        served = choose_served(every)
        ours, base = _find_metric(every[served], NDCG), _find_metric(every["popularity"], NDCG)
        if ours is not None and base:
            rows.append(
                f"served {served} (best on validation): "
                f"test NDCG@20 {ours / base:.2f}x popularity's"
            )
    return rows


def _find_metric(metrics: Any, path: str) -> float | None:
    """The number at a dotted ``path`` (e.g. ``test.ranking.ndcg@20``) of a metrics document."""
    node = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def online_summary(store_path: Path, since_ns: int) -> dict[str, Any]:
    """Latency and 15-minute watch rate of the recommendations served during the live phase."""
    from services.common import online
    from services.ingest import derived
    from services.ingest.store import EventStore

    store = EventStore(store_path)
    reco_table = derived.recommendations(store, since_ns=since_ns)
    recos = reco_table.to_pylist()
    watches = store.read("watch", since_ns=since_ns, columns=["user_id", "movie_id", "time_ns"])
    # One definition of success (services.common.online); lists still open at the data's end
    # are pending, not failures.
    rate = online.watch_rate(reco_table, watches)
    per_user = online.user_watch_rate(reco_table, watches)
    ok = [r for r in recos if r["status"] == 200]
    ms = np.array([r["response_time_ms"] for r in ok], dtype=float)
    statuses: dict[str, int] = {}
    for r in recos:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    distinct = len({tuple(r["result"]) for r in ok})
    return {
        "recommendation_requests": len(recos),
        "by_status": statuses,
        "latency_ms_p50": float(np.percentile(ms, 50)) if len(ms) else None,
        "latency_ms_p99": float(np.percentile(ms, 99)) if len(ms) else None,
        "distinct_lists_share": round(distinct / len(ok), 3) if ok else None,
        "watched_within_15_min": rate.successes,
        "lists_decided": rate.trials,
        "lists_pending": rate.pending,
        "watch_rate_15_min": round(rate.rate, 3) if rate.trials else None,
        "watch_rate_15_min_mean_per_user": round(per_user.mean, 3) if per_user.users else None,
    }


def prometheus_summary() -> dict[str, Any]:
    """A few of the numbers Prometheus scraped from the services."""
    queries = {
        "recommender_requests_per_s": "sum(rate(marquee_recommender_requests_total[1m]))",
        "ingest_events_total": "sum(marquee_ingest_events_total)",
        "ingest_rejected_total": "sum(marquee_ingest_rejected_total)",
        "targets_up": "sum(up)",
    }
    out: dict[str, Any] = {}
    for key, q in queries.items():
        with contextlib.suppress(requests.RequestException, KeyError, IndexError, ValueError):
            r = requests.get(
                f"http://127.0.0.1:{PROM_PORT}/api/v1/query", params={"query": q}, timeout=5
            )
            result = r.json()["data"]["result"]
            out[key] = round(float(result[0]["value"][1]), 2) if result else None
    return out


@contextlib.contextmanager
def prometheus(targets: dict[str, str]) -> Iterator[None]:
    """Prometheus from Debian's package, scraping ``targets``, for the duration of the block."""
    env = {
        **os.environ,
        "PROM_PORT": str(PROM_PORT),
        "PROM_RUN_DIR": str(RUN / "prometheus"),
        "PROM_TARGETS": ",".join(f"{k}={v}" for k, v in targets.items()),
        "PROM_SCRAPE_INTERVAL": "2s",
    }
    script = str(ROOT / "scripts" / "prometheus.sh")
    subprocess.run([script, "start"], env=env, check=True)
    try:
        yield
    finally:
        subprocess.run([script, "stop"], env=env, check=False)


def main(argv: list[str] | None = None) -> int:
    """Run the demo."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--users", type=int, default=30_000, help="users in the simulated world")
    ap.add_argument("--movies", type=int, default=5_000, help="movies in the catalog")
    ap.add_argument("--days", type=float, default=3, help="days of history to backfill")
    ap.add_argument(
        "--malformed-rate", type=float, default=0.002, help="share of malformed lines injected"
    )
    ap.add_argument("--live-seconds", type=float, default=60, help="wall seconds of live traffic")
    ap.add_argument("--keep", action="store_true", help="leave the services running at the end")
    args = ap.parse_args(argv)

    if RUN.exists():
        subprocess.run(
            [str(ROOT / "scripts/kafka.sh"), "stop"],
            env={**os.environ, "KAFKA_PORT": str(KAFKA_PORT), "KAFKA_RUN_DIR": str(RUN / "kafka")},
            check=False,
            capture_output=True,
        )
        shutil.rmtree(RUN)
    LOGS.mkdir(parents=True)
    world = ["--seed", "42", "--users", str(args.users), "--movies", str(args.movies)]
    procs = Processes()
    summary: dict[str, Any] = {}
    kafka_env = {**os.environ, "KAFKA_PORT": str(KAFKA_PORT), "KAFKA_RUN_DIR": str(RUN / "kafka")}
    t_start = time.monotonic()
    try:
        say(f"starting Apache Kafka (KRaft, official jars via Maven) on {BOOTSTRAP}")
        subprocess.run([str(ROOT / "scripts/kafka.sh"), "start"], env=kafka_env, check=True)

        say(f"starting the simulator's user/movie API on 127.0.0.1:{API_PORT}")
        procs.start(
            "sim-api",
            [
                str(VENV_BIN / "marquee"),
                "sim",
                "api",
                *world,
                "--host",
                "127.0.0.1",
                "--port",
                str(API_PORT),
            ],
        )
        wait_ready(f"http://127.0.0.1:{API_PORT}/readyz", procs, "sim-api")

        size = f"{args.users:,}-user × {args.movies:,}-movie"
        say(f"backfilling {args.days:g} days of a {size} world")
        t0 = time.monotonic()
        marquee(
            "sim",
            "backfill",
            "--days",
            str(args.days),
            "--start",
            START,
            *world,
            "--kafka",
            BOOTSTRAP,
            "--run-dir",
            str(RUN / "sim"),
            "--target",
            "builtin:popularity",
            "--malformed-rate",
            str(args.malformed_rate),
            log="sim-backfill",
        )
        backfill_s = time.monotonic() - t0
        lines = sum(end_offsets("movielog").values())
        info(f"{lines:,} lines in {backfill_s:.1f} s ({lines / backfill_s:,.0f} lines/s)")
        summary["backfill"] = {"lines": lines, "seconds": round(backfill_s, 1)}

        say(f"ingesting the stream exactly once into the Parquet store (ops on :{INGEST_PORT})")
        store = RUN / "store"
        ingest_env = {
            "MARQUEE_INGEST_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
            "MARQUEE_INGEST_STORE_PATH": str(store),
            "MARQUEE_INGEST_HTTP_HOST": "127.0.0.1",
            "MARQUEE_INGEST_HTTP_PORT": str(INGEST_PORT),
            "MARQUEE_INGEST_ENRICH_URL": f"http://127.0.0.1:{API_PORT}",
            "MARQUEE_INGEST_FLUSH_INTERVAL_S": "2",
            "MARQUEE_INGEST_GROUP_ID": "marquee-demo-ingest",
        }
        t0 = time.monotonic()
        procs.start("ingest", [str(VENV_BIN / "marquee"), "ingest", "run"], env=ingest_env)
        stats = wait_ingested(procs, "movielog")
        ingest_s = time.monotonic() - t0
        info(f"stored rows: {json.dumps(stats.get('rows', {}))}")
        quarantined = quarantine_counts(store)
        info(f"quarantined with a reason: {json.dumps(quarantined)}")
        info(f"caught up in {ingest_s:.1f} s ({lines / ingest_s:,.0f} lines/s including start-up)")
        summary["ingest"] = {
            "seconds": round(ingest_s, 1),
            "rows": stats.get("rows"),
            "quarantined": quarantined,
        }

        until = datetime.fromisoformat(START) + timedelta(days=args.days)
        snapshot = RUN / "snapshots" / until.strftime("%Y%m%dT%H%M%S")
        say(f"writing the training snapshot until {until.isoformat()} to {snapshot}")
        marquee(
            "ingest",
            "snapshot",
            "--until",
            until.isoformat(),
            "--out",
            str(snapshot),
            "--store",
            str(store),
            "--enrich-url",
            f"http://127.0.0.1:{API_PORT}",
            env=ingest_env,
            log="ingest-snapshot",
        )
        manifest = json.loads((snapshot / "manifest.json").read_text())
        info(f"row counts {manifest['row_counts']}, content hash {manifest['content_hash'][:12]}")

        say("training, evaluating and registering SVD, KNN, popularity and ALS")
        registry = RUN / "models"
        t0 = time.monotonic()
        marquee(
            "train",
            "--snapshot",
            str(snapshot),
            "--register",
            "stable",
            "--registry",
            str(registry),
            "--work-dir",
            str(RUN / "trainer"),
            "--reports",
            str(RUN / "reports"),
            log="train",
        )
        train_s = time.monotonic() - t0
        report = RUN / "reports" / "report.md"
        info(f"trained in {train_s:.1f} s; report: {report.relative_to(ROOT)}")
        offline = offline_table(registry)
        for line in offline:
            info(line)
        name, metrics = best_model(registry)
        info(
            f"serving '{name}' (best validation NDCG@20: {_find_metric(metrics, SELECT)}; "
            f"test NDCG@20: {_find_metric(metrics, NDCG)})"
        )
        summary["train"] = {"seconds": round(train_s, 1), "served_model": name}

        say(f"starting the recommender (gunicorn) on 127.0.0.1:{RECO_PORT}")
        procs.start(
            "recommender",
            [
                str(VENV_BIN / "marquee"),
                "serve",
                "--registry",
                str(registry),
                "--model",
                name,
                "--bind",
                f"127.0.0.1:{RECO_PORT}",
                "--users-api",
                f"http://127.0.0.1:{API_PORT}",
                "--metrics-dir",
                str(RUN / "recommender-metrics"),
            ],
        )
        wait_ready(f"http://127.0.0.1:{RECO_PORT}/readyz", procs, "recommender")
        sample = requests.get(f"http://127.0.0.1:{RECO_PORT}/recommend/42", timeout=2)
        info(f"GET /recommend/42 -> {sample.status_code} {sample.text[:90]}…")
        info(f"model version {sample.headers.get('X-Model-Version')}")

        targets = {
            "simulator": f"127.0.0.1:{API_PORT}",
            "ingest": f"127.0.0.1:{INGEST_PORT}",
            "recommender": f"127.0.0.1:{RECO_PORT}",
        }
        with prometheus(targets):
            say(
                f"streaming live for {args.live_seconds:g} s at {LIVE_SPEED}x simulated speed:"
                " users ask the recommender for lists and react to them"
            )
            live_since = time.time_ns()
            marquee(
                "sim",
                "live",
                *world,
                "--kafka",
                BOOTSTRAP,
                "--run-dir",
                str(RUN / "live"),
                "--target",
                f"http://127.0.0.1:{RECO_PORT}",
                "--duration",
                str(args.live_seconds),
                "--reco-share",
                "1.0",
                "--speed",
                str(LIVE_SPEED),
                "--rate",
                "2000",
                "--reco-host",
                f"127.0.0.1:{RECO_PORT}",
                log="sim-live",
            )
            wait_ingested(procs, "movielog", timeout_s=120)
            summary["online"] = online_summary(store, live_since - 10**9)
            summary["prometheus"] = prometheus_summary()

        say("summary")
        summary["total_seconds"] = round(time.monotonic() - t_start, 1)
        print(json.dumps(summary, indent=2))
        (RUN / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        info(f"logs in {LOGS.relative_to(ROOT)}, summary in .run/demo/summary.json")
        return 0
    finally:
        if args.keep:
            info("--keep: services left running")
        else:
            procs.stop_all()
            subprocess.run(
                [str(ROOT / "scripts/kafka.sh"), "stop"],
                env=kafka_env,
                check=False,
                capture_output=True,
            )


if __name__ == "__main__":
    sys.exit(main())
