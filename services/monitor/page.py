"""The experiment page: server-rendered HTML with inline SVG charts (no scripts, no CDN).

Cumulative conversion per arm with its confidence band over event time, the comparison with
control, the sample-ratio check, the guardrails and the decision history.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["render"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 300, 56, 16, 16, 36

CSS = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:22px 0 8px}
.sub{color:#555;font-size:13px} table{border-collapse:collapse;font-size:13px}
td,th{border-bottom:1px solid #ddd;padding:4px 10px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.badge{display:inline-block;padding:2px 8px;border-radius:10px;color:#fff;font-size:13px}
.ok{background:#2ca02c}.bad{background:#d62728}.warn{background:#ff7f0e}.info{background:#1f77b4}
.grid{display:flex;gap:28px;flex-wrap:wrap} .reason{font-size:13px;max-width:560px}
svg text{font-size:11px;fill:#444}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _pct(v: Any, digits: int = 2) -> str:
    return "-" if v is None else f"{100 * float(v):.{digits}f}%"


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "-"
    f = float(v)
    if not math.isfinite(f):
        return "-"
    return f"{f:.{digits}g}"


def _time(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9, _dt.UTC).strftime("%m-%d %H:%M")


def chart(series: Sequence[dict[str, Any]]) -> str:
    """Cumulative conversion per arm with confidence bands, as an inline SVG."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for row in series:
        arms.setdefault(row["arm"], []).append(row)
    pts = [r for r in series if r["users"] > 0]
    if len(pts) < 1:
        return (
            f'<svg width="{W}" height="60" role="img"><text x="10" y="30">no data yet</text></svg>'
        )
    x0 = int(min(r["at_ns"] for r in pts))
    x1 = int(max(r["at_ns"] for r in pts))
    lows = [r["conversion_low"] for r in pts if r["conversion_low"] is not None]
    highs = [r["conversion_high"] for r in pts if r["conversion_high"] is not None]
    y0 = max(0.0, float(min(lows + [r["conversion"] for r in pts])))
    y1 = min(1.0, float(max(highs + [r["conversion"] for r in pts])))
    if y1 - y0 < 1e-6:
        y0, y1 = max(0.0, y0 - 0.01), y1 + 0.01
    span = (x1 - x0) or 1

    def sx(ns: int) -> float:
        return PAD_L + (W - PAD_L - PAD_R) * (ns - x0) / span

    def sy(v: float) -> float:
        return PAD_T + (H - PAD_T - PAD_B) * (1 - (v - y0) / (y1 - y0))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        'aria-label="cumulative conversion per arm">'
    ]
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        y = sy(v)
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end">{100 * v:.1f}%</text>')
    out.append(f'<text x="{PAD_L}" y="{H - 8}">{_e(_time(x0))}</text>')
    out.append(f'<text x="{W - PAD_R}" y="{H - 8}" text-anchor="end">{_e(_time(x1))}</text>')
    out.append(f'<text x="{W / 2:.0f}" y="{H - 8}" text-anchor="middle">event time (UTC)</text>')
    legend_x = PAD_L + 10
    for k, (arm, rows) in enumerate(sorted(arms.items())):
        color = COLORS[k % len(COLORS)]
        rows = [r for r in rows if r["users"] > 0 and r["conversion_low"] is not None]
        if not rows:
            continue
        upper = " ".join(f"{sx(r['at_ns']):.1f},{sy(r['conversion_high']):.1f}" for r in rows)
        lower = " ".join(
            f"{sx(r['at_ns']):.1f},{sy(r['conversion_low']):.1f}" for r in reversed(rows)
        )
        out.append(
            f'<polygon points="{upper} {lower}" fill="{color}" fill-opacity="0.15" stroke="none"/>'
        )
        line = " ".join(f"{sx(r['at_ns']):.1f},{sy(r['conversion']):.1f}" for r in rows)
        out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>')
        out.append(
            f'<rect x="{legend_x}" y="{PAD_T + 4}" width="12" height="12" '
            f'fill="{color}"/><text x="{legend_x + 16}" y="{PAD_T + 14}">'
            f"{_e(arm)}</text>"
        )
        legend_x += 24 + 8 * len(arm) + 20
    out.append("</svg>")
    return "".join(out)


def _badge(action: str) -> str:
    cls = {"promote": "ok", "continue": "info", "ramp": "info"}.get(action, "bad")
    return f'<span class="badge {cls}">{_e(action)}</span>'


def render(
    snapshot: dict[str, Any] | None,
    series: Sequence[dict[str, Any]],
    decisions: Sequence[dict[str, Any]],
) -> str:
    """The whole page."""
    head = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Marquee monitor</title><style>{CSS}</style></head><body>"
    )
    if snapshot is None:
        return head + "<h1>Marquee monitor</h1><p>No evaluation step yet.</p></body></html>"
    a = snapshot["analysis"]
    d = snapshot["decision"]
    parts = [
        head,
        f"<h1>Experiment {_e(snapshot['experiment'])}</h1>",
        f'<div class="sub">status <b>{_e(snapshot["status"])}</b> · exposure '
        f"{_pct(snapshot['exposure'], 0)} · control <b>{_e(snapshot['control'])}</b> · "
        f"judged until {_e(_time(a['edge_ns'])) if a['edge_ns'] > 0 else '-'} · "
        f"{a['pending']} exposures pending · evaluation lag {snapshot['lag_s']:.0f} s"
        f"{' · DRY RUN' if snapshot['dry_run'] else ''}</div>",
        f'<h2>Decision {_badge(d["action"])}</h2><div class="reason">{_e(d["reason"])}</div>',
        "<h2>Cumulative conversion per arm (95% band)</h2>",
        chart(series),
    ]
    rows = "".join(
        f"<tr><td>{_e(r['arm'])}</td><td>{r['users']}</td><td>{_pct(r['conversion'])}</td>"
        f"<td>{_pct(r['conversion_ci'][0])} – {_pct(r['conversion_ci'][1])}</td>"
        f"<td>{_pct(r['watch_rate'])}</td><td>{_num(r['watch_minutes'], 3)}</td>"
        f"<td>{r['switched_users']}</td><td>{_num(r['weight'], 3)}%</td></tr>"
        for r in a["arms"]
    )
    parts.append(
        "<h2>Arms</h2><table><tr><th>arm</th><th>users</th><th>conversion</th>"
        "<th>95% CI</th><th>watch rate</th><th>minutes/user</th><th>switched</th>"
        f"<th>weight</th></tr>{rows}</table>"
    )
    comp_rows = []
    for c in a["comparisons"]:
        f = c["fixed"]["conversion"]
        s = c["sequential"]
        comp_rows.append(
            f"<tr><td>{_e(c['arm'])}</td><td>{_e(c['metric'])}</td>"
            f"<td>{_num(s.get('diff'), 3)}</td><td>{_num(f['p_value'], 3)}</td>"
            f"<td>{_num(f.get('p_holm'), 3)}</td><td>{_num(s['p_value'], 3)}</td>"
            f"<td>{_num(s['ci_low'], 3)} – {_num(s['ci_high'], 3)}</td>"
            f"<td>{_pct(c['bayes']['chance_to_beat'], 1)}</td>"
            f"<td>{_pct(c['cuped'].get('conversion', {}).get('variance_reduction'), 1)} / "
            f"{_pct(c['cuped'].get('watch_minutes', {}).get('variance_reduction'), 1)}</td>"
            f"<td>{_num(c['power'].get('mde_now'), 3)}</td></tr>"
        )
    parts.append(
        "<h2>Against control</h2><table><tr><th>arm</th><th>metric</th><th>diff</th>"
        "<th>p (fixed)</th><th>p (Holm)</th><th>p (always valid)</th>"
        "<th>confidence sequence</th><th>chance to beat</th>"
        "<th>CUPED var. cut (conv. / minutes)</th>"
        f"<th>MDE now</th></tr>{''.join(comp_rows)}</table>"
    )
    srm = a.get("srm") or {}
    srm_ok = not srm or srm.get("p_value", 1) >= 0.001
    guard = "".join(
        f"<tr><td>{_e(r['arm'])}</td><td>{r['requests']}</td><td>{_pct(r['error_rate'])}</td>"
        f"<td>{_pct(r['fallback_rate'])}</td><td>{_num(r['latency_p99_ms'], 4)} ms</td>"
        f"<td>{_pct(r['coverage'])}</td></tr>"
        for r in a["arms"]
    )
    parts.append(
        '<div class="grid"><div><h2>Sample ratio</h2>'
        f'<span class="badge {"ok" if srm_ok else "bad"}">'
        f"{'no mismatch' if srm_ok else 'MISMATCH'}</span> chi-square "
        f"{_num(srm.get('chi2'), 3)}, p = {_num(srm.get('p_value'), 3)}</div>"
        "<div><h2>Guardrails</h2><table><tr><th>arm</th><th>requests</th><th>errors</th>"
        f"<th>fallbacks</th><th>p99</th><th>coverage</th></tr>{guard}</table></div></div>"
    )
    hist = "".join(
        f"<tr><td>{_e(str(x['recorded_at'])[:19])}</td><td>{_badge(x['action'])}</td>"
        f"<td>{'dry run' if x['dry_run'] else 'applied'}</td>"
        f"<td class=reason style='text-align:left'>{_e(x['reason'])}</td></tr>"
        for x in decisions
    )
    parts.append(
        "<h2>Decision history</h2><table><tr><th>recorded</th><th>action</th>"
        f"<th>mode</th><th>reason</th></tr>{hist or '<tr><td>none</td></tr>'}</table>"
    )
    parts.append("</body></html>")
    return "".join(parts)
