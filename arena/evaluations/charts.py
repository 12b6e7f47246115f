"""Plotly figures of a finished run's page, built on the server as plain JSON; static/arena/charts.js draws them.

Each function takes what arena.evaluations.queries already computed and returns
``{"data": [...], "layout": {...}}`` (None when there is nothing to draw), so a figure costs no query of its own.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from arena.core.charts import BLEND, FRONTIER, SINGLE, figure


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
    return figure(fig)


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
    return figure(fig)


def size_gain(curve: dict | None) -> dict | None:
    """Majority vote of the best n members as n grows, measured per split, between the two lines that
    say whether it pays: the best member alone (what a blend must beat) and the oracle, any of the n
    members right (what no blend of them can beat); the copula model's prediction (dashed) and the
    level it says the vote converges to (dotted)."""
    if not curve:
        return None
    sizes = curve["sizes"]
    fit = curve["fit_split"]
    report = curve.get("report_split") or fit
    fig = go.Figure()
    if curve.get("oracle", {}).get(report):
        fig.add_trace(
            go.Scatter(
                name=f"oracle (any member right), {report}",
                x=sizes,
                y=curve["oracle"][report],
                mode="lines+markers",
                line={"color": "#8a8f98", "dash": "dot"},
                marker={"symbol": "triangle-up"},
                hovertemplate=f"best %{{x}}, any of them right on {report}: %{{y:.3f}}<extra>oracle</extra>",
            )
        )
    for split, accuracy in curve["measured"].items():
        fig.add_trace(
            go.Scatter(
                name=f"majority vote of the best n, {split} ({curve['items'][split]} items)",
                x=sizes,
                y=accuracy,
                mode="lines+markers",
                # Paler where the model was fitted: the other split is the out-of-sample check.
                line={"color": "#9aa9e6" if split == fit and len(curve["measured"]) > 1 else SINGLE},
                hovertemplate=f"vote of the best %{{x}}, {split}: %{{y:.3f}}<extra></extra>",
            )
        )
    alone = curve["measured"][report][0]
    fig.add_trace(
        go.Scatter(
            name=f"best member alone ({curve['members'][0]}), {report}",
            x=[sizes[0], sizes[-1]],
            y=[alone, alone],
            mode="lines",
            line={"color": "#3d424a", "width": 1.5},
            hovertemplate=f"{curve['members'][0]} alone on {report}: {alone:.3f}<extra>best member</extra>",
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
            "title": {"text": f"n: members in the vote, best on {fit} first"},
            "tickvals": sizes,
            "ticktext": [f"{k}: {m}" for k, m in zip(sizes, curve["members"], strict=True)],
        },
        yaxis={"title": {"text": "accuracy (share of items right)"}, "range": [0, 1]},
        height=380,
        legend={"orientation": "h", "y": -0.25},
    )
    return figure(fig)
