"""Run the benchmarks and write one JSON file per benchmark under ``benchmarks/results/``.

Each ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool) -> dict``.  Benchmarks compare
against their baseline inside the same run (a ratio), because these machines are noisy.

    python -m benchmarks.run               # all
    python -m benchmarks.run parser sim    # some, by name
    python -m benchmarks.run --quick       # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _git_sha() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def discover() -> list[str]:
    """Names of all benchmarks (``bench_<name>.py``)."""
    return sorted(p.stem.removeprefix("bench_") for p in HERE.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    """Run the named (or all) benchmarks and write their JSON results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {discover()})")
    ap.add_argument("--quick", action="store_true", help="smaller sizes for a smoke run")
    args = ap.parse_args(argv)
    names = args.names or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        print(f"unknown benchmarks {unknown}; available: {discover()}", file=sys.stderr)
        return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        print(f"== bench {name}", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        started = time.perf_counter()
        try:
            result = module.run(quick=args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            print(f"bench {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        doc = {
            "benchmark": name,
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "git_sha": _git_sha(),
            "machine": {"python": platform.python_version(), "cpus": _cpus()},
            "quick": args.quick,
            "wall_seconds": round(time.perf_counter() - started, 2),
            "results": result,
        }
        out = RESULTS / f"{name}.json"
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        print(f"-> {out.relative_to(HERE.parent)}", flush=True)
    return 1 if failed else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
