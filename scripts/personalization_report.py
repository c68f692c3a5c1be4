"""Regenerate docs/reports/personalization/: ML-100K temporal study and the Recommenders protocol.

    .venv/bin/python scripts/personalization_report.py [--ml100k ../shared/data/movielens/ml-100k]
    .venv/bin/python scripts/personalization_report.py --lift-only   # the demo world's section

Seeded and deterministic (BPR, ALS and LightGBM run on one thread); takes ~20-40 minutes on
2 cores.  The last section, the simulated demo world, comes from the newest dated
``benchmarks/results/<date>/lift.json`` (``python -m benchmarks.run lift``); ``--lift-only``
rewrites just that section of the existing README.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from services.trainer import data as td
from services.trainer.ms_protocol import ms_protocol
from services.trainer.study import temporal_study

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["popularity", "segment", "ease", "als", "bpr", "rerank"]
MS_FAMILIES = ["popularity", "ease", "als", "rerank"]


def _f(v: Any) -> str:
    return "–" if v is None else f"{v:.4f}"


def rerank_lines(temporal: dict[str, Any]) -> list[str]:
    """How the two-stage model's ranker was trained for the test period (its refit)."""
    fit = temporal["test"].get("rerank", {}).get("fit", {}).get("ranker")
    if not fit:
        return []
    windows = "; ".join(
        f"{w['warm_label_users']} users with history of {w['label_users']}, candidate recall "
        f"{w['candidate_recall']}"
        for w in fit["windows"]
    )
    return [
        "**Two-stage (`rerank`)**: candidates from EASE, ALS, recency-weighted popularity,",
        "the user's segment and genre affinity, reranked by LightGBM lambdarank on the",
        "generators' scores, movie features (popularity, recency, year, mean rating, genres) and",
        "user features (age, gender, occupation, history, recency). For the test period the",
        "ranker learned from the refit's last label windows (labels strictly after the features",
        f"they are computed from; newest first: {windows}); {fit['queries_fit']} queries trained",
        f"it and {fit['queries_stop']} early-stopped it at {fit['trees']} trees. It is stored in",
        "LightGBM's text format beside the arrays, hashed in the manifest, and served by NumPy.",
        "",
    ]


def markdown(temporal: dict[str, Any], ms: dict[str, Any]) -> str:
    """The two protocols side by side, as Markdown."""
    k = temporal["k"]
    s = temporal["summary"]
    lines = [
        "# Personalization on MovieLens 100K: two protocols",
        "",
        "Regenerate with `.venv/bin/python scripts/personalization_report.py`; raw numbers in",
        "`temporal.json` and `ms_protocol.json` beside this file.",
        "",
        "## Temporal split (ours)",
        "",
        "Last 10 % of events test, the 10 % before validate. Every family's parameters were chosen",
        "by a seeded Optuna search (TPE) on the validation period only",
        "(`services/trainer/study.py`; the cold-start lists' parameters once, on a small grid, for",
        "every family); the winners were refitted on train + validation and the test period",
        "scored once (the `tune` DVC stage runs the same study on the pipeline's data). "
        f"{temporal['test_users']} test users, {temporal['test_users_with_history']} with",
        "training history (warm); cold users get a segment list from every model.",
        "",
        f"| model | NDCG@{k} | 95 % CI | warm | warm CI | cold | val NDCG@{k} "
        "| chosen parameters |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in temporal["test"].items():
        b = m["breakdown"]
        ci, wci = b[f"ndcg@{k}_ci95"], b[f"ndcg@{k}_with_history_ci95"]
        tuned = temporal["tuning"].get(name, {})
        lines.append(
            f"| {name} | {_f(m[f'ndcg@{k}'])} | [{_f(ci[0])}, {_f(ci[1])}] | "
            f"{_f(m[f'ndcg@{k}_with_history'])} | [{_f(wci[0])}, {_f(wci[1])}] | "
            f"{_f(m[f'ndcg@{k}_cold'])} | {_f(tuned.get('val', {}).get(f'ndcg@{k}'))} | "
            f"`{json.dumps(tuned.get('best', {}))}` |"
        )
    r1, r2 = s["best_vs_all_time_popularity"], s.get("warm_personalized_vs_non_personalized", {})
    lines += [
        "",
        f"* Best on validation: **{s['best_on_validation']}**; against all-time popularity",
        f"  on the test period: **{r1['ratio']}×** (paired bootstrap 95 % CI {r1['ci95']};",
        "  goal 1.15×).",
        "* Warm users: best personalized on validation "
        f"**{s.get('warm_best_personalized')}** against the best non-personalized",
        f"  **{s.get('warm_best_non_personalized')}**: **{r2.get('ratio')}×**"
        f" (CI {r2.get('ci95')}; goal 1.15×).",
        "",
        *rerank_lines(temporal),
        f"NDCG@{k} by training-history length (test users of each bucket):",
        "",
    ]
    buckets = list(next(iter(temporal["test"].values()))["breakdown"]["by_history"])
    first = next(iter(temporal["test"].values()))["breakdown"]
    lines += [
        "| model | "
        + " | ".join(f"{b} (n={first['by_history'][b]['users']})" for b in buckets)
        + " |",
        "|---|" + "---|" * len(buckets),
    ]
    for name, m in temporal["test"].items():
        bh = m["breakdown"]["by_history"]
        lines.append(f"| {name} | " + " | ".join(_f(bh[b][f"ndcg@{k}"]) for b in buckets) + " |")
    for kind in ("by_gender", "by_age"):
        cells = list(first[kind])
        lines += [
            "",
            f"| NDCG@{k} {kind.replace('_', ' ')} | "
            + " | ".join(f"{c} (n={first[kind][c]['users']})" for c in cells)
            + " |",
            "|---|" + "---|" * len(cells),
        ]
        for name, m in temporal["test"].items():
            g = m["breakdown"][kind]
            lines.append(f"| {name} | " + " | ".join(_f(g[c][f"ndcg@{k}"]) for c in cells) + " |")
    lines += [
        "",
        "## Microsoft Recommenders protocol",
        "",
        ms["protocol"] + "; parameters chosen on an inner 75/25 split of the training part,",
        "refitted on the whole training part, test scored once (`services/trainer/ms_protocol.py`;",
        "our metric code is checked against `ranx` in tests/trainer/test_ms_protocol.py).",
        "",
        "| model | P@10 | R@10 | NDCG@10 | MAP@10 | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in ms["models"].items():
        t = m["test"]
        lines.append(
            f"| {name} (ours) | {_f(t['precision@10'])} | {_f(t['recall@10'])} | "
            f"{_f(t['ndcg@10'])} | {_f(t['map@10'])} | `{json.dumps(m['params'])}` |"
        )
    for name, m in ms["published"].items():
        lines.append(f"| {name} (published) | {_f(m['precision@10'])} | | | | |")
    return "\n".join(lines) + "\n"


LIFT_HEADING = "## The simulated demo world (`make demo`)"


def newest_lift(results: Path = ROOT / "benchmarks" / "results") -> Path | None:
    """The newest dated ``lift.json`` under ``benchmarks/results/<date>/``."""
    found = sorted(results.glob("????-??-??/lift.json"))
    return found[-1] if found else None


def _x(v: Any) -> str:
    return "–" if v is None else f"{v:.2f}×"


def _ratio(model: dict[str, Any], base: dict[str, Any], period: str) -> float | None:
    """``model``'s NDCG@20 over ``base``'s in ``period``."""
    ours, theirs = (m.get(period, {}).get("ndcg@20") for m in (model, base))
    return ours / theirs if ours is not None and theirs else None


def lift_section(doc: dict[str, Any], source: str) -> str:
    """The demo world's offline and online lift over popularity (a ``bench_lift`` result)."""
    r = doc["results"]
    w, off, on, goals = r["world"], r["offline"], r["online"], r["goals"]
    best = goals["served"]
    lines = [
        LIFT_HEADING,
        "",
        f"From [`{source}`](../../../{source}) (`python -m benchmarks.run lift`, measured"
        f" {doc['when'][:10]}): the world `make demo` runs (`scripts.stack.World`:"
        f" {w['users']:,} users × {w['movies']:,} movies, {w['days']:g} days of history,"
        f" {w.get('new_accounts_per_day', 2000):g} new accounts a day, seed {w['seed']}),"
        " backfilled in-process, split in time (10 % validation, 10 % test) and trained with",
        "`params.yaml`; offline NDCG@20 next to the oracle's lists (true taste, minus what the",
        "user saw), on validation by fits to the training period and on test, touched once, by",
        "refits to training + validation. Online, the backfilled simulator is copied once per",
        "arm and continues for"
        f" {r['online_hours']:g} simulated hours with every session asking that arm (same seed,",
        "same users, same clock): the 15-minute watch rate, compared per user with a one-sided",
        "paired t-test against the trained popularity list.",
        "",
        "| model | val NDCG@20 | × popularity | test NDCG@20 | × popularity | online watch rate |"
        " vs popularity | paired p | oracle gap closed online |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(
        (n for n in off if n != "oracle"),
        key=lambda n: -on.get(n, {}).get("watch_rate_15_min", 0.0),
    )
    for name in ["oracle", *order]:
        o, n = off.get(name, {}), on.get(name, {})
        val, test = (
            {**o.get(per, {}), "x_popularity": _ratio(o, off.get("popularity", {}), per)}
            for per in ("val", "test")
        )
        points, p = (
            n.get("points_over_popularity"),
            n.get("paired_vs_popularity", {}).get("p_one_sided"),
        )
        gap = n.get("oracle_gap_closed")
        lines.append(
            f"| {name}{' (served)' if name == best else ''} | {_f(val.get('ndcg@20'))} |"
            f" {_x(val.get('x_popularity'))} | {_f(test.get('ndcg@20'))} |"
            f" {_x(test.get('x_popularity'))} | {_f(n.get('watch_rate_15_min'))} |"
            f" {'–' if points is None else f'{points:+.1f} points'} |"
            f" {'–' if p is None else f'{p:.1e}'} | {'–' if gap is None else f'{gap:.0%}'} |"
        )
    for name in ("builtin_popularity", "oracle_genre_affinity_only", "oracle_demographics_only"):
        if name in on:
            n = on[name]
            lines.append(
                f"| {name} (online only) | | | | | {_f(n['watch_rate_15_min'])} |"
                f" {n.get('points_over_popularity', 0):+.1f} points | | |"
            )
    met = {True: "met", False: "not met"}
    lines += [
        "",
        f"Goals for the served model ({best}, best on validation): offline test NDCG@20"
        f" {goals['offline_test_ndcg_x_popularity']:.3f}× popularity (goal ≥ 1.3×:"
        f" {met[goals['offline_at_least_1_3x']]}); online"
        f" {goals['online_points_over_popularity']:+.1f} points (goal ≥ +5, p < 0.01;"
        f" p = {goals['online_p_one_sided']:.1e}) closing"
        f" {goals['online_oracle_gap_closed']:.0%} of the popularity → oracle gap (goal ≥ 40 %):"
        f" {met[goals['online_goal_met']]}.",
        "",
    ]
    return "\n".join(lines)


def with_lift(readme: str, lift: Path | None) -> str:
    """``readme`` with its demo-world section replaced by (or ending in) ``lift``'s numbers."""
    head = readme.split(LIFT_HEADING)[0].rstrip("\n") + "\n"
    if lift is None:
        return head
    doc = json.loads(lift.read_text())
    return head + "\n" + lift_section(doc, str(lift.relative_to(ROOT)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ml100k", default=str(ROOT.parent / "shared/data/movielens/ml-100k"))
    ap.add_argument("--out", default=str(ROOT / "docs/reports/personalization"))
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument(
        "--lift-only", action="store_true", help="only rewrite the demo world's section"
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.lift_only:
        readme = out / "README.md"
        readme.write_text(with_lift(readme.read_text(), newest_lift()))
        print(f"wrote the demo world's section of {readme}")
        return
    started = time.perf_counter()
    tables, prov = td.load_source(f"movielens:{args.ml100k}")
    temporal = temporal_study(td.prepare(tables, prov, 0.1, 0.1), FAMILIES, 20, args.seed)
    (out / "temporal.json").write_text(json.dumps(temporal, indent=1, default=str) + "\n")
    ms = ms_protocol(args.ml100k, MS_FAMILIES, 10, args.seed)
    (out / "ms_protocol.json").write_text(json.dumps(ms, indent=1) + "\n")
    (out / "README.md").write_text(with_lift(markdown(temporal, ms), newest_lift()))
    print(f"wrote {out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
