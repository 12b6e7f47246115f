"""Plotly figures of the boards and an entry's card, built on the server as plain JSON; static/arena/charts.js
draws them (a run's own figures: arena/evaluations/charts.py).

Each function takes data the services already computed and returns ``{"data": [...], "layout": {...}}``
(None when there is nothing to draw), so a figure costs no query of its own.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import plotly.graph_objects as go

from arena.core.charts import BLEND, FRONTIER, LAYOUT, REGRESSED, SINGLE, figure, score_range, symmetric_range
from ensembles.stats import pareto_frontier

# What "cost" means on the cost-quality chart: row key, axis title. Per item, so suites of
# different sizes and runs on fewer items sit on the same scale.
COSTS = {
    "compute_s": "GPU/CPU seconds per item",
    "tokens": "tokens per item",
    "member_calls": "model calls per item",
}


def cost_quality(rows: list[dict]) -> dict | None:
    """Score against cost per item, singles and blends apart, the Pareto frontier drawn through the rest.

    A menu switches the cost between compute seconds, tokens and model calls; the frontier is
    computed for each, since an entry cheap in calls can be dear in tokens.

    Built as plain dicts rather than through plotly's figure classes: their per-value validation
    took longer than the rest of a 500-entry leaderboard. The tests check the result against
    plotly's schema.
    """
    scored = [r for r in rows if r["score"] is not None and r["n"]]
    if not scored:
        return None
    groups = [("single model", SINGLE, "circle", [r for r in scored if not r["is_blend"]])]
    groups.append(("blend", BLEND, "diamond", [r for r in scored if r["is_blend"]]))
    labels = [[f"{r['entry']} ({r['kind']})" for r in members] for *_, members in groups]

    def per_item(members: list[dict], cost: str) -> list[float]:
        return [round(r[cost] / r["n"], 6) for r in members]

    def frontier(cost: str) -> tuple[list[float], list[float], list[str]]:
        xs = per_item(scored, cost)
        idx = pareto_frontier([(x, r["score"]) for x, r in zip(xs, scored, strict=True)])
        return [xs[i] for i in idx], [scored[i]["score"] for i in idx], [scored[i]["entry"] for i in idx]

    first = next(iter(COSTS))
    data = [
        {
            "type": "scatter",
            "name": name,
            "x": per_item(members, first),
            "y": [r["score"] for r in members],
            "error_y": {
                "type": "data",
                "symmetric": False,
                "array": [r["ci_high"] - r["score"] for r in members],
                "arrayminus": [r["score"] - r["ci_low"] for r in members],
                "thickness": 1,
                "color": color,
            },
            "mode": "markers",
            "marker": {"color": color, "symbol": symbol, "size": 9},
            "text": text,
            "hovertemplate": "%{text}<br>score %{y:.3f}<br>cost %{x:.4g}<extra></extra>",
        }
        for (name, color, symbol, members), text in zip(groups, labels, strict=True)
    ]
    fx, fy, names = frontier(first)
    data.append(
        {
            "type": "scatter",
            "name": "Pareto frontier",
            "x": fx,
            "y": fy,
            "text": names,
            "mode": "lines+markers",
            "line": {"color": FRONTIER, "shape": "hv", "dash": "dot"},
            "marker": {"symbol": "circle-open", "size": 17, "color": FRONTIER, "line": {"width": 2}},
            "hovertemplate": "%{text}: on the frontier<extra></extra>",
        }
    )
    buttons = []
    for cost, title in COSTS.items():
        fx, fy, names = frontier(cost)
        restyle = {
            "x": [per_item(members, cost) for *_, members in groups] + [fx],
            "y": [data[0]["y"], data[1]["y"], fy],
            "text": [*labels, names],
        }
        buttons.append({"label": title, "method": "update", "args": [restyle, {"xaxis.title.text": title}]})
    layout = {
        **LAYOUT,
        "title": {"text": "Quality against cost", "x": 0},
        "xaxis": {"title": {"text": COSTS[first]}},
        "yaxis": {"title": {"text": "score (95% CI)"}},
        "height": 380,
        "legend": {"orientation": "h", "y": -0.2},
        "updatemenus": [{"buttons": buttons, "x": 1, "xanchor": "right", "y": 1.15, "yanchor": "top"}],
    }
    return {"data": data, "layout": layout}


def suite_heatmap(entries: list[dict], suites: list[str]) -> dict | None:
    """Entries (rows, best first) × suites (columns): each cell the entry's latest score there, coloured on
    a fixed range (arena.core.charts.score_range) rather than stretched between the extremes shown."""
    if not entries or not suites:
        return None
    z = [[e["scores"].get(s) for s in suites] for e in entries]
    zmin, zmax = score_range(v for row in z for v in row)
    scale = {"colorscale": "Viridis", "zmin": zmin, "zmax": zmax}
    return _by_suite([e["entry"] for e in entries], suites, z, "Score per suite", "score", "", scale)


def lift_heatmap(entries: list[dict], suites: list[str]) -> dict | None:
    """Blends (rows, in the table's order) × suites: each cell the blend's lift over its best member there,
    on a diverging scale centred on 0 (the best member) with a range symmetric about it, so blue is a
    gain, red a loss, and white no difference. None when no blend has a lift."""
    blends = [e for e in entries if e.get("lifts")]
    if not blends or not suites:
        return None
    z = [[e["lifts"].get(s) for s in suites] for e in blends]
    half = symmetric_range(v for row in z for v in row)
    scale = {"colorscale": "RdBu", "zmid": 0, "zmin": -half, "zmax": half}
    title = "Lift over the best member, per suite"
    return _by_suite([e["entry"] for e in blends], suites, z, title, "lift", "+", scale, " over its best member")


def _by_suite(
    names: list[str], suites: list[str], z: list[list], title: str, measure: str, sign: str, scale: dict, said: str = ""
) -> dict:
    """A heat map of entries (rows, in the given order) × suites, each cell labelled with its value."""
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=suites,
            y=names,
            **scale,
            text=[["" if v is None else f"{v:{sign}.2f}" for v in row] for row in z],
            texttemplate="%{text}",
            hovertemplate=f"%{{y}} on %{{x}}: %{{z:{sign}.3f}}{said}<extra></extra>",
            colorbar={"title": {"text": measure}},
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title={"text": title, "x": 0},
        height=max(220, 100 + 28 * len(names)),
        yaxis={"autorange": "reversed", "automargin": True, "type": "category"},
        xaxis={"side": "top", "type": "category"},
    )
    return figure(fig)


def score_history(points: list[dict]) -> dict | None:
    """One line per suite over the runs, with 95% intervals; regressions circled in red."""
    if not points:
        return None
    by_suite: dict[str, list[dict]] = defaultdict(list)
    for p in sorted(points, key=lambda p: p["at"]):
        by_suite[p["suite"]].append(p)
    fig = go.Figure()
    for suite, ps in by_suite.items():
        fig.add_trace(
            go.Scatter(
                name=suite,
                x=[p["at"] for p in ps],
                y=[p["score"] for p in ps],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [p["ci_high"] - p["score"] for p in ps],
                    "arrayminus": [p["score"] - p["ci_low"] for p in ps],
                    "thickness": 1,
                },
                text=[f"run #{p['run_id']}" for p in ps],
                mode="lines+markers",
                hovertemplate="%{text}: %{y:.3f}<extra>" + suite + "</extra>",
            )
        )
    regressed = [p for p in points if p["regressed"]]
    if regressed:
        fig.add_trace(
            go.Scatter(
                name="regression",
                x=[p["at"] for p in regressed],
                y=[p["score"] for p in regressed],
                text=[
                    f"run #{p['run_id']} on {p['suite']}: {p['delta']:+.3f} [{p['delta_low']:+.3f}, {p['delta_high']:+.3f}]"
                    for p in regressed
                ],
                mode="markers",
                marker={"symbol": "circle-open", "size": 18, "color": REGRESSED, "line": {"width": 2.5}},
                hovertemplate="%{text}<extra>regressed</extra>",
            )
        )
    fig.update_layout(
        title={"text": "Score history", "x": 0},
        yaxis_title="score (95% CI)",
        height=340,
        legend={"orientation": "h", "y": -0.2},
        xaxis={"tickformat": "%d %b %H:%M"},
    )
    # Runs minutes apart (or one run) would get ticks milliseconds apart: widen the axis to hours.
    times = [datetime.fromisoformat(p["at"]) for p in points]
    if max(times) - min(times) < timedelta(hours=2):
        fig.update_xaxes(
            range=[(min(times) - timedelta(hours=1)).isoformat(), (max(times) + timedelta(hours=1)).isoformat()]
        )
    return figure(fig)
