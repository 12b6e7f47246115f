"""The search page's figure: every candidate's dev quality against its cost, the Pareto set drawn through.

Plain dicts like the leaderboard's cost-quality chart, in the same colours and layout
(arena/core/charts.py); static/arena/charts.js draws it.
"""

from __future__ import annotations

from collections import defaultdict

from arena.core.charts import FRONTIER, LAYOUT, SINGLE
from arena.search.models import CostMetric

OVER_BUDGET = "#b0b0b0"
# One colour per strategy (plotly's "D3" qualitative palette, without the frontier's green and the singles' blue).
PALETTE = ["#ff7f0e", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#7f7f7f", "#b7791f"]


def _points(rows: list[dict], metric: str) -> dict:
    return {
        "x": [r["cost"][metric] for r in rows],
        "y": [r["quality"] for r in rows],
        "error_y": {
            "type": "data",
            "symmetric": False,
            "array": [r["high"] - r["quality"] for r in rows],
            "arrayminus": [r["quality"] - r["low"] for r in rows],
            "thickness": 1,
        },
        "text": [r["label"] for r in rows],
    }


def search_chart(results: dict, metric: str, budget: float | None) -> dict | None:
    """Dev quality (cross-validated, 95% interval) against cost per item in the budget's metric.

    Candidates within the budget are coloured by strategy, those over it grey; each member alone
    is a blue circle for reference; the Pareto set is the green line.
    """
    candidates = [c for c in results.get("candidates", []) if c["quality"] is not None]
    if not candidates:
        return None
    by_strategy: dict[str, list[dict]] = defaultdict(list)
    for c in candidates:
        if c["within_budget"]:
            by_strategy[c["strategy"]].append(c)
    hover = "%{text}<br>dev quality %{y:.3f}<br>cost %{x:.4g}<extra></extra>"
    data = [
        {
            "type": "scatter",
            "name": name,
            **_points(rows, metric),
            "mode": "markers",
            "marker": {"color": PALETTE[i % len(PALETTE)], "size": 7, "opacity": 0.75},
            "hovertemplate": hover,
        }
        for i, (name, rows) in enumerate(sorted(by_strategy.items()))
    ]
    over = [c for c in candidates if not c["within_budget"]]
    if over:
        data.append(
            {
                "type": "scatter",
                "name": "over budget",
                **_points(over, metric),
                "mode": "markers",
                "marker": {"color": OVER_BUDGET, "symbol": "x", "size": 6},
                "hovertemplate": hover,
            }
        )
    members = [m for m in results.get("members", []) if m["quality"] is not None]
    if members:
        data.append(
            {
                "type": "scatter",
                "name": "member alone",
                **_points(members, metric),
                "text": [m["members"][0] for m in members],
                "mode": "markers",
                "marker": {"color": SINGLE, "symbol": "circle", "size": 10},
                "hovertemplate": hover,
            }
        )
    pareto = [results["candidates"][i] for i in results.get("pareto", [])]
    data.append(
        {
            "type": "scatter",
            "name": "Pareto set",
            "x": [c["cost"][metric] for c in pareto],
            "y": [c["quality"] for c in pareto],
            "text": [c["label"] for c in pareto],
            "mode": "lines+markers",
            "line": {"color": FRONTIER, "shape": "hv", "dash": "dot"},
            "marker": {"symbol": "circle-open", "size": 16, "color": FRONTIER, "line": {"width": 2}},
            "hovertemplate": "%{text}: on the Pareto set<extra></extra>",
        }
    )
    layout = {
        **LAYOUT,
        "title": {"text": "Candidate blends: dev quality against cost", "x": 0},
        "xaxis": {"title": {"text": CostMetric(metric).label}},
        "yaxis": {"title": {"text": "dev quality, cross-validated (95% CI)"}},
        "height": 420,
        "legend": {"orientation": "h", "y": -0.2},
    }
    if budget is not None:
        layout["shapes"] = [
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": budget,
                "x1": budget,
                "y0": 0,
                "y1": 1,
                "line": {"color": OVER_BUDGET, "dash": "dash", "width": 1.5},
            }
        ]
        layout["annotations"] = [
            {
                "x": budget,
                "xref": "x",
                "y": 1,
                "yref": "paper",
                "text": "budget",
                "showarrow": False,
                "yanchor": "bottom",
            }
        ]
    return {"data": data, "layout": layout}
