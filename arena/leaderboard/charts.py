"""Plotly figures for the pages, built on the server as plain JSON; static/arena/charts.js draws them.

Each function takes data the services already computed and returns ``{"data": [...], "layout": {...}}``
(None when there is nothing to draw), so a figure costs no query of its own.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ensembles.stats import pareto_frontier

# What "cost" means on the cost-quality chart: row key, axis title. Per item, so suites of
# different sizes and runs on fewer items sit on the same scale.
COSTS = {
    "compute_s": "GPU/CPU seconds per item",
    "tokens": "tokens per item",
    "member_calls": "model calls per item",
}
SINGLE, BLEND, FRONTIER, REGRESSED = "#3354d1", "#b7791f", "#1f8a4c", "#c0392b"
LAYOUT = {
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "font": {"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 12},
    "paper_bgcolor": "#fff",
    "plot_bgcolor": "#fff",
}


def _figure(fig: go.Figure) -> dict:
    fig.update_layout(**LAYOUT)
    return fig.to_plotly_json()


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
    """Entries (rows, best first) × suites (columns): each cell the entry's latest score there."""
    if not entries or not suites:
        return None
    z = [[e["scores"].get(s) for s in suites] for e in entries]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=suites,
            y=[e["entry"] for e in entries],
            colorscale="Viridis",
            text=[["" if v is None else f"{v:.2f}" for v in row] for row in z],
            texttemplate="%{text}",
            hovertemplate="%{y} on %{x}: %{z:.3f}<extra></extra>",
            colorbar={"title": {"text": "score"}},
            hoverongaps=False,
        )
    )
    fig.update_layout(
        title={"text": "Score per suite", "x": 0},
        height=max(220, 100 + 28 * len(entries)),
        yaxis={"autorange": "reversed", "automargin": True, "type": "category"},
        xaxis={"side": "top", "type": "category"},
    )
    return _figure(fig)


def member_agreement(diversity: dict | None) -> dict | None:
    """The members' error correlation and Cohen's kappa as two heat maps: bright off-diagonal = redundant."""
    if not diversity:
        return None
    names = diversity["members"]
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("Error correlation (phi)", "Cohen's kappa between answers"),
        horizontal_spacing=0.18,
    )
    for col, key in ((1, "error_correlation"), (2, "kappa")):
        z = diversity[key]
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=names,
                y=names,
                zmin=-1,
                zmax=1,
                colorscale="RdBu",
                reversescale=True,
                showscale=col == 2,
                text=[["–" if v is None else f"{v:.2f}" for v in row] for row in z],
                texttemplate="%{text}",
                hovertemplate="%{y} × %{x}: %{z:.3f}<extra></extra>",
                hoverongaps=False,
            ),
            row=1,
            col=col,
        )
        fig.update_yaxes(autorange="reversed", type="category", row=1, col=col)
        fig.update_xaxes(type="category", row=1, col=col)
    fig.update_layout(height=max(300, 140 + 40 * len(names)))
    return _figure(fig)


def selection_gain(curve: dict) -> dict:
    """Mutual-information selection: information gained per pick, and the vote's score with the first k picks."""
    sizes = list(range(1, len(curve["chosen"]) + 1))
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(
        go.Bar(
            name="information gain of the pick (bits)",
            x=sizes,
            y=curve["gain"],
            customdata=curve["chosen"],
            marker={"color": "#c9d3f5"},
            # Smoothing can make a pick's estimated gain slightly negative (see ensembles/strategies/selection.py).
            hovertemplate="pick %{x}: %{customdata}<br>%{y:+.3f} bits<extra></extra>",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            name="information so far (bits)",
            x=sizes,
            y=curve["information"],
            mode="lines+markers",
            line={"color": SINGLE},
            hovertemplate="%{x} members: %{y:.3f} bits<extra></extra>",
        ),
        secondary_y=False,
    )
    fig.add_trace(
        go.Scatter(
            name=f"vote of the first k, {curve['split']} score",
            x=sizes,
            y=curve["score"],
            mode="lines+markers",
            line={"color": FRONTIER},
            hovertemplate="%{x} members: score %{y:.3f}<extra></extra>",
        ),
        secondary_y=True,
    )
    fig.update_layout(
        title={"text": f"{curve['entry']}: gain against ensemble size", "x": 0},
        xaxis={
            "title": {"text": "members picked, in pick order"},
            "tickvals": sizes,
            "ticktext": [f"{k}: {m}" for k, m in zip(sizes, curve["chosen"], strict=True)],
        },
        height=340,
        legend={"orientation": "h", "y": -0.25},
    )
    fig.update_yaxes(title_text="bits about the answer (dev)", secondary_y=False)
    # Scores on the scale they are read on (0 to 1 for most metrics), not zoomed into a flat line.
    fig.update_yaxes(title_text="score", range=[0, max(1.0, *curve["score"])], secondary_y=True)
    return _figure(fig)


def size_gain(curve: dict | None) -> dict | None:
    """Majority vote of the best n members as n grows: measured per split, the copula model's
    prediction (dashed) and the level it says the vote converges to (dotted)."""
    if not curve:
        return None
    sizes = curve["sizes"]
    fit = curve["fit_split"]
    fig = go.Figure()
    for split, accuracy in curve["measured"].items():
        fig.add_trace(
            go.Scatter(
                name=f"measured, {split} ({curve['items'][split]} items)",
                x=sizes,
                y=accuracy,
                mode="lines+markers",
                # Paler where the model was fitted: the other split is the out-of-sample check.
                line={"color": "#9aa9e6" if split == fit and len(curve["measured"]) > 1 else SINGLE},
                hovertemplate=f"best %{{x}}, {split}: %{{y:.3f}}<extra></extra>",
            )
        )
    if curve["asymptote"] is not None:
        # Without an asymptote the copula had nothing to fit (every member always right or always
        # wrong), and a drawn prediction would only look like one.
        fig.add_trace(
            go.Scatter(
                name=f"model's prediction (Gaussian copula fitted on {fit})",
                x=sizes,
                y=curve["predicted"],
                mode="lines",
                line={"color": BLEND, "dash": "dash"},
                hovertemplate="best %{x}, model: %{y:.3f}<extra></extra>",
            )
        )
        limit = curve["asymptote"]
        fig.add_trace(
            go.Scatter(
                name=f"model's limit with ever more members: {limit:.0%}",
                x=[sizes[0], sizes[-1]],
                y=[limit, limit],
                mode="lines",
                line={"color": FRONTIER, "dash": "dot"},
                hovertemplate=f"n → ∞: {limit:.3f}<extra></extra>",
            )
        )
    # No title: the card around the chart already asks the question.
    fig.update_layout(
        xaxis={
            "title": {"text": f"members in the vote, best on {fit} first"},
            "tickvals": sizes,
            "ticktext": [f"{k}: {m}" for k, m in zip(sizes, curve["members"], strict=True)],
        },
        yaxis={"title": {"text": "accuracy of the majority vote"}, "range": [0, 1]},
        height=360,
        legend={"orientation": "h", "y": -0.25},
    )
    return _figure(fig)


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
        fig.update_xaxes(range=[(min(times) - timedelta(hours=1)).isoformat(), (max(times) + timedelta(hours=1)).isoformat()])
    return _figure(fig)
