"""``marquee ingest``: run the consumer, build snapshots, export derived tables, show stats."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from services.common.cliutil import EXIT_CODES_HELP, CliError, Parser, not_found, run_cli

log = logging.getLogger("services.ingest")

DERIVED = ("sessions", "ratings", "recommendations", "users", "movies", "quarantine")


def _settings(store: str | None = None, **extra: Any) -> Any:
    from services.ingest.settings import IngestSettings

    overrides: dict[str, Any] = {k: v for k, v in extra.items() if v is not None}
    if store is not None:
        overrides["store_path"] = Path(store)
    return IngestSettings(**overrides)


def _store_settings(args: argparse.Namespace) -> tuple[Path, str | None]:
    """Store path and enrichment URL from flags, else the environment (no Kafka needed)."""
    import os

    store = args.store or os.environ.get("MARQUEE_INGEST_STORE_PATH")
    if not store:
        raise CliError("no event store given", "pass --store DIR or set MARQUEE_INGEST_STORE_PATH")
    if not (Path(store) / "_commits").is_dir():  # a typo must not read as an empty store
        raise not_found(
            f"no event store at {Path(store).resolve()}",
            "pass the --store that `marquee ingest run` writes (MARQUEE_INGEST_STORE_PATH)",
        )
    url = getattr(args, "enrich_url", None) or os.environ.get("MARQUEE_INGEST_ENRICH_URL")
    return Path(store), url


def cmd_run(args: argparse.Namespace) -> int:
    """Run the consumer and the ops HTTP port until SIGTERM/SIGINT."""
    from services.common.runtime import GracefulStop

    # Handle SIGTERM before the slow imports: a stop during start-up must still exit cleanly.
    stop = GracefulStop()

    from services.common.logging import configure_logging
    from services.common.service import BackgroundServer
    from services.ingest.app import create_app
    from services.ingest.consumer import IngestService

    settings = _settings(args.store, http_port=args.port, http_host=args.host)
    configure_logging(settings.log_level, settings.log_json)
    service = IngestService(settings, stop=stop.event)
    server = BackgroundServer(
        create_app(settings, service), settings.http_host, settings.http_port
    ).start()
    log.info("ops port listening", extra={"host": server.host, "port": server.port})
    try:
        return service.run()
    finally:
        server.close()


def _cache(store: Path) -> Any:
    from services.ingest.enrich import CACHE_FILE, MetadataCache

    return MetadataCache(store / CACHE_FILE) if (store / CACHE_FILE).exists() else None


def _enrich_missing(store_path: Path, url: str, until_ns: int | None, deadline_s: float) -> None:
    """Look up metadata of ids in the store the cache does not know yet (bounded in time)."""
    import time

    from tqdm import tqdm

    from services.ingest import derived
    from services.ingest.enrich import (
        CACHE_FILE,
        Enricher,
        MetadataCache,
        MetadataClient,
        TransientError,
    )
    from services.ingest.store import EventStore

    store = EventStore(store_path)
    cache = MetadataCache(store_path / CACHE_FILE)
    enricher = Enricher(MetadataClient(url), cache)

    def left() -> int:
        return enricher.pending("user") + enricher.pending("movie")

    enricher.submit("user", derived.user_ids(store, until_ns=until_ns).to_pylist())
    enricher.submit("movie", derived.movie_ids(store, until_ns=until_ns).to_pylist())
    end = time.monotonic() + deadline_s
    with tqdm(total=left(), desc="enrich", unit="id", disable=left() == 0) as bar:
        while left() and time.monotonic() < end:
            before = left()
            try:
                enricher.run_once()
            except TransientError as exc:
                # The snapshot is still written: unknown metadata stays null.
                log.warning("metadata API unavailable, snapshot keeps nulls: %s", exc)
                break
            bar.update(before - left())
            time.sleep(enricher.min_interval_s)  # the API is rate-limited per client
    cache.close()


def cmd_snapshot(args: argparse.Namespace) -> int:
    """Write the training snapshot of every event before ``--until``."""
    from services.ingest.snapshots import build_snapshot, parse_until
    from services.ingest.store import EventStore

    store_path, url = _store_settings(args)
    until_ns = parse_until(args.until)
    if url and args.enrich:
        _enrich_missing(store_path, url, until_ns, args.enrich_deadline)
    manifest = build_snapshot(EventStore(store_path), args.out, until_ns, _cache(store_path))
    print(
        json.dumps({k: manifest[k] for k in ("until_ns", "row_counts", "content_hash")}, indent=2)
    )
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Print what the store holds: rows per kind, offsets, quarantine reasons."""
    import pyarrow.compute as pc

    from services.ingest.store import EventStore, by_topic

    store_path, _ = _store_settings(args)
    store = EventStore(store_path)
    q = store.read("quarantine", columns=["reason"])
    reasons = {}
    if q.num_rows:
        vc = pc.value_counts(q["reason"]).to_pylist()
        reasons = {d["values"]: d["counts"] for d in sorted(vc, key=lambda d: d["values"])}
    out = {
        "store": str(store_path),
        "commits": len(store.commits),
        "rows": store.counts(),
        "next_offsets": by_topic(store.next_offsets()),
        "quarantine_reasons": reasons,
    }
    print(json.dumps(out, indent=2))
    return 0


def cmd_derived(args: argparse.Namespace) -> int:
    """Write one derived table (or the quarantine) to a Parquet file."""
    import pyarrow.parquet as pq

    from services.ingest import derived
    from services.ingest.snapshots import parse_until
    from services.ingest.store import EventStore

    store_path, _ = _store_settings(args)
    store = EventStore(store_path)
    until = parse_until(args.until) if args.until else None
    since = parse_until(args.since) if args.since else None
    cache = _cache(store_path)
    if args.table == "sessions":
        table = derived.watch_sessions(store, until_ns=until, since_ns=since)
    elif args.table == "ratings":
        table = derived.latest_ratings(store, until_ns=until, since_ns=since)
    elif args.table == "recommendations":
        table = derived.recommendations(store, until_ns=until, since_ns=since)
    elif args.table == "users":
        table = derived.users_table(derived.user_ids(store, until_ns=until).to_pylist(), cache)
    elif args.table == "movies":
        table = derived.movies_table(derived.movie_ids(store, until_ns=until).to_pylist(), cache)
    else:
        table = store.read("quarantine")
    pq.write_table(table, args.out, compression="zstd")
    print(json.dumps({"table": args.table, "rows": table.num_rows, "out": str(args.out)}))
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    """Merge small segment files (needs the writer lock: stop ``run`` on this store first)."""
    from services.ingest.store import EventStore, StoreError

    store_path, _ = _store_settings(args)
    try:
        store = EventStore(store_path, writer=True)
    except StoreError as exc:
        raise CliError(str(exc), "the running consumer compacts on its own", 1) from None
    replaced = store.compact(args.min_files)
    store.close()
    print(json.dumps({"files_replaced": replaced}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``marquee ingest`` argument parser."""
    ap = Parser(
        prog="marquee ingest",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(
        dest="cmd", required=True, metavar="{run,snapshot,stats,derived,compact}"
    )

    run = sub.add_parser("run", help="consume the stream into the store; ops HTTP port")
    run.add_argument("--store", help="event store folder (default MARQUEE_INGEST_STORE_PATH)")
    run.add_argument("--port", type=int, help="ops HTTP port (default MARQUEE_INGEST_HTTP_PORT)")
    run.add_argument(
        "--host", help="ops HTTP interface (default 127.0.0.1; 0.0.0.0 in a container)"
    )
    run.set_defaults(func=cmd_run)

    snap = sub.add_parser("snapshot", help="write the training snapshot of events before --until")
    snap.add_argument(
        "--until", required=True, help="exclusive end: 2026-03-02T14:00:00, a date, or ns"
    )
    snap.add_argument("--out", required=True, type=Path, help="snapshot folder to (re)write")
    snap.add_argument("--store", help="event store folder (default MARQUEE_INGEST_STORE_PATH)")
    snap.add_argument("--enrich-url", help="metadata API to fill missing ids from first")
    snap.add_argument(
        "--no-enrich", dest="enrich", action="store_false", help="use the cache as is"
    )
    snap.add_argument(
        "--enrich-deadline", type=float, default=300.0, help="seconds to spend enriching"
    )
    snap.set_defaults(func=cmd_snapshot)

    st = sub.add_parser("stats", help="rows, offsets and quarantine reasons of the store")
    st.add_argument("--store", help="event store folder (default MARQUEE_INGEST_STORE_PATH)")
    st.set_defaults(func=cmd_stats)

    dv = sub.add_parser("derived", help="export a derived table to Parquet")
    dv.add_argument("table", choices=DERIVED, help="which table: " + ", ".join(DERIVED))
    dv.add_argument("--out", required=True, type=Path, help="Parquet file to write")
    dv.add_argument("--store", help="event store folder (default MARQUEE_INGEST_STORE_PATH)")
    dv.add_argument("--since", help="inclusive start time")
    dv.add_argument("--until", help="exclusive end time")
    dv.set_defaults(func=cmd_derived)

    cp = sub.add_parser("compact", help="merge small segment files of each (type, date) folder")
    cp.add_argument("--store", help="event store folder (default MARQUEE_INGEST_STORE_PATH)")
    cp.add_argument("--min-files", type=int, default=2, help="compact folders with this many files")
    cp.set_defaults(func=cmd_compact)
    return ap


def main(argv: list[str]) -> int:
    """Entry point of ``marquee ingest``; exit codes as in ``services.common.cliutil``."""
    return run_cli("marquee ingest", lambda: _main(argv))


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd != "run":
        from services.common.logging import configure_logging

        configure_logging("INFO", json=False)
    return int(args.func(args))
