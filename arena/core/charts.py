"""The colours and layout every page's figures share, so singles, blends and frontiers look alike on each page."""

SINGLE, BLEND, FRONTIER, REGRESSED = "#3354d1", "#b7791f", "#1f8a4c", "#c0392b"
LAYOUT = {
    "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
    "font": {"family": "system-ui, -apple-system, 'Segoe UI', sans-serif", "size": 12},
    "paper_bgcolor": "#fff",
    "plot_bgcolor": "#fff",
}


def figure(fig) -> dict:
    """A plotly figure in the shared layout, as the JSON static/arena/charts.js draws."""
    fig.update_layout(**LAYOUT)
    return fig.to_plotly_json()
