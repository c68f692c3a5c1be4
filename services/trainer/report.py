"""The evaluation report: Markdown tables, PNG plots and a row-per-model JSON for ``dvc plots``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.trainer.util import write_json

RANKING = ("precision@20", "recall@20", "ndcg@20", "hit_rate@20")


def _fmt(v: Any, digits: int = 4) -> str:
    """A table cell: the number rounded, or n/a."""
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _mib(v: Any) -> str:
    """Bytes as MiB for a table cell."""
    return "n/a" if v is None else f"{v / 2**20:.2f}"


def rows(doc: dict[str, Any], period: str = "test") -> list[dict[str, Any]]:
    """One flat row per model for the comparison table and ``dvc plots``."""
    out = []
    for family, res in doc["models"].items():
        per = res.get(period, {})
        rating, ranking = per.get("rating", {}), per.get("ranking", {})
        out.append(
            {
                "model": family,
                "rmse": rating.get("rmse"),
                "mae": rating.get("mae"),
                **{m: ranking.get(m) for m in RANKING},
                "coverage": ranking.get("coverage"),
                "mean_popularity_percentile": ranking.get("mean_popularity_percentile"),
                "long_tail_share": ranking.get("long_tail_share"),
                "personalized_share": ranking.get("personalized_share"),
                "ndcg@20_with_history": ranking.get("ndcg@20_with_history"),
                "ndcg@20_cold": ranking.get("ndcg@20_cold"),
                "train_seconds": res.get("train", {}).get("train_seconds"),
                "train_peak_rss_bytes": res.get("train", {}).get("peak_rss_bytes"),
                "infer_ms_mean": res.get("infer_ms_mean"),
                "infer_ms_p95": res.get("infer_ms_p95"),
                "artifact_bytes": res.get("artifact_bytes"),
                "loaded_bytes": res.get("loaded_bytes"),
            }
        )
    return out


def markdown(doc: dict[str, Any]) -> str:
    """The report as Markdown."""
    split = doc["split"]
    lines = [
        "# Offline evaluation",
        "",
        f"Snapshot `{split['snapshot'].get('content_hash', '?')[:16]}` from "
        f"`{split['snapshot'].get('source', '?')}`: "
        f"{split['users']} users, {split['items']} movies.",
        "Temporal split (train on the past, validate and test on the most recent periods): "
        + ", ".join(
            f"{name} {c['interactions']} watches / {c['ratings']} ratings"
            for name, c in split["counts"].items()
        )
        + ".",
        "",
    ]
    for period in ("test", "val"):
        table = rows(doc, period)
        if not table:
            continue
        lines += [
            f"## {period}: accuracy and ranking",
            "",
            "| model | RMSE | MAE | P@20 | R@20 | NDCG@20 | HR@20 | NDCG@20 with history "
            "| NDCG@20 cold | coverage | pop. pct | long tail | personalized |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in table:
            lines.append(
                "| "
                + " | ".join(
                    [
                        r["model"],
                        _fmt(r["rmse"]),
                        _fmt(r["mae"]),
                        *(_fmt(r[m]) for m in RANKING),
                        _fmt(r["ndcg@20_with_history"]),
                        _fmt(r["ndcg@20_cold"]),
                        _fmt(r["coverage"]),
                        _fmt(r["mean_popularity_percentile"]),
                        _fmt(r["long_tail_share"]),
                        _fmt(r["personalized_share"]),
                    ]
                )
                + " |"
            )
        lines.append("")
    lines += breakdown_lines(doc)
    lines += [
        "## cost",
        "",
        "| model | train s | train peak RSS MiB | top-20 ms/user (mean) | p95 | artifact MiB "
        "| loaded MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows(doc):
        lines.append(
            f"| {r['model']} | {_fmt(r['train_seconds'], 2)} | {_mib(r['train_peak_rss_bytes'])} | "
            f"{_fmt(r['infer_ms_mean'], 3)} | {_fmt(r['infer_ms_p95'], 3)} | "
            f"{_mib(r['artifact_bytes'])} | {_mib(r['loaded_bytes'])} |"
        )
    lines += ["", "## RMSE by subgroup (test)", ""]
    groups: list[tuple[str, str]] = []
    for res in doc["models"].values():
        rating = res.get("test", {}).get("rating", {})
        for kind in ("by_gender", "by_age"):
            for g in rating.get(kind, {}):
                if (kind, g) not in groups:
                    groups.append((kind, g))
    rated = {
        f: r
        for f, r in doc["models"].items()
        if r.get("test", {}).get("rating", {}).get("rmse") is not None
    }
    if rated:
        lines += ["| group | n | " + " | ".join(rated) + " |", "|---|---|" + "---|" * len(rated)]
        for kind, g in groups:
            cells, n = [], 0
            for res in rated.values():
                s = res["test"]["rating"][kind].get(g, {})
                n = s.get("n", n)
                cells.append(_fmt(s.get("rmse")))
            label = ("gender " if kind == "by_gender" else "age ") + g
            lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
        not_rated = [f for f in doc["models"] if f not in rated]
        if not_rated:
            lines += [
                "",
                f"RMSE is not applicable to {', '.join(not_rated)} (they rank, not rate).",
            ]
    for key in ("surprise_protocol", "tuning", "knn_memory"):
        if key in doc:
            lines += ["", f"## {key.replace('_', ' ')}", "", "```json", _json(doc[key]), "```"]
    return "\n".join(lines) + "\n"


def breakdown_lines(doc: dict[str, Any], period: str = "test", k: int = 20) -> list[str]:
    """NDCG@k with bootstrap CIs, and by history length and demographic group (Markdown)."""
    models = {
        f: r[period]["ranking"]["breakdown"]
        for f, r in doc["models"].items()
        if "breakdown" in r.get(period, {}).get("ranking", {})
    }
    if not models:
        return []

    def ci(v: Any) -> str:
        return f"[{v[0]:.4f}, {v[1]:.4f}]" if v else "–"

    lines = [
        f"## {period}: NDCG@{k} with 95 % bootstrap intervals over users, and by group",
        "",
        "| model | all | with history | cold |",
        "|---|---|---|---|",
    ]
    for f, b in models.items():
        lines.append(
            f"| {f} | {ci(b.get(f'ndcg@{k}_ci95'))} | {ci(b.get(f'ndcg@{k}_with_history_ci95'))} "
            f"| {ci(b.get(f'ndcg@{k}_cold_ci95'))} |"
        )
    first = next(iter(models.values()))
    for kind, label in (
        ("by_history", "training history"),
        ("by_gender", "gender"),
        ("by_age", "age"),
    ):
        cells = list(first.get(kind, {}))
        if not cells:
            continue
        counts = " | ".join(f"{c} (n={first[kind][c]['users']})" for c in cells)
        lines += ["", f"| NDCG@{k} by {label} | {counts} |", "|---|" + "---|" * len(cells)]
        for f, b in models.items():
            vals = " | ".join(_fmt(b[kind].get(c, {}).get(f"ndcg@{k}")) for c in cells)
            lines.append(f"| {f} | {vals} |")
    return [*lines, ""]


def _json(obj: Any) -> str:
    """Indented JSON for a report block."""
    import json

    return json.dumps(obj, indent=2, sort_keys=True)


def plots(doc: dict[str, Any], out: Path) -> list[Path]:
    """Bar charts: ranking, RMSE by subgroup, cost."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out.mkdir(parents=True, exist_ok=True)
    table = rows(doc)
    names = [r["model"] for r in table]
    written = []

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(RANKING), 1)
    x = np.arange(len(names))
    for n, m in enumerate(RANKING):
        ax.bar(x + n * width, [r[m] or 0 for r in table], width, label=m)
    ax.set_xticks(x + width * (len(RANKING) - 1) / 2, names)
    ax.set_title("Ranking on held-out watches (test period)")
    ax.legend()
    fig.tight_layout()
    written.append(out / "ranking.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    rated = [
        (f, r["test"]["rating"])
        for f, r in doc["models"].items()
        if r.get("test", {}).get("rating", {}).get("rmse") is not None
    ]
    fig, ax = plt.subplots(figsize=(9, 4))
    if rated:
        groups = (
            ["all"]
            + [f"g:{g}" for g in rated[0][1]["by_gender"]]
            + [f"a:{a}" for a in rated[0][1]["by_age"]]
        )
        width = 0.8 / len(rated)
        x = np.arange(len(groups))
        for n, (fam, rating) in enumerate(rated):
            vals = [rating["rmse"]]
            vals += [rating["by_gender"][g]["rmse"] or 0 for g in rating["by_gender"]]
            vals += [rating["by_age"][a]["rmse"] or 0 for a in rating["by_age"]]
            ax.bar(x[: len(vals)] + n * width, vals, width, label=fam)
        ax.set_xticks(x + width * (len(rated) - 1) / 2, groups, rotation=30, ha="right")
        ax.legend()
    ax.set_title("RMSE by subgroup (test period; lower is better)")
    fig.tight_layout()
    written.append(out / "rmse_by_group.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.5))
    for ax, key, title in zip(
        axes,
        ("train_seconds", "infer_ms_mean", "loaded_bytes"),
        ("training time (s)", "top-20 per user (ms)", "loaded size (MiB)"),
        strict=True,
    ):
        vals = [(r[key] or 0) / (2**20 if key == "loaded_bytes" else 1) for r in table]
        ax.bar(names, vals, color="tab:gray")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    written.append(out / "cost.png")
    fig.savefig(written[-1], dpi=90)
    plt.close(fig)
    return written


def write_report(doc: dict[str, Any], out: Path) -> None:
    """report.md, comparison.json (for ``dvc plots``) and the PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(markdown(doc))
    write_json(out / "comparison.json", rows(doc))
    plots(doc, out / "plots")
