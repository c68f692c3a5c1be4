"""Run the benchmarks and write one JSON file per benchmark under ``benchmarks/results/``.

Each ``benchmarks/bench_<name>.py`` exposes ``run(quick: bool) -> dict``.  Benchmarks compare
against their baseline inside the same run (a ratio), because these machines are noisy.

A full run writes ``benchmarks/results/<YYYY-MM-DD>/<name>.json`` (committed: the README's
numbers point at these, each with the machine it ran on) and the latest copy
``benchmarks/results/<name>.json`` (git-ignored).  ``--quick`` writes only the latest copy.

    python -m benchmarks.run               # all
    python -m benchmarks.run parser sim    # some, by name
    python -m benchmarks.run --quick       # smaller sizes, for a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
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
            "machine": machine(),
            "quick": args.quick,
            "wall_seconds": round(time.perf_counter() - started, 2),
            "results": result,
        }
        text = json.dumps(doc, indent=2) + "\n"
        out = RESULTS / f"{name}.json"
        out.write_text(text)
        if not args.quick:
            dated = RESULTS / doc["when"][:10] / f"{name}.json"
            dated.parent.mkdir(parents=True, exist_ok=True)
            dated.write_text(text)
            out = dated
        print(json.dumps(result, indent=2))
        print(f"-> {out.relative_to(HERE.parent)}", flush=True)
    return 1 if failed else 0


def machine() -> dict[str, object]:
    """What the numbers were measured on: CPU model and count, memory, kernel, Python, BLAS."""
    import os

    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        mem_gib = round(kib / 2**20, 1)
    blas = "unknown"
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info

        blas = ", ".join(
            f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    return {
        "cpu": model,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "blas": blas,
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", ""),
    }


if __name__ == "__main__":
    sys.exit(main())
