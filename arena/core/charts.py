"""The colours, layout and colour ranges every page's figures share, so singles, blends and frontiers look
alike on each page and a colour means the same value on each."""

import numpy as np

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


def score_range(values) -> tuple[float, float]:
    """The colour range of a heat map of scores: [0, 1] when every score lies in it (most metrics), so a
    colour means the same score on every page; otherwise the 5th to 95th percentile, so that one outlier
    does not wash every other cell into one colour (cells beyond the range take its end colours)."""
    present = np.asarray([v for v in values if v is not None], dtype=float)
    if not present.size or (present.min() >= 0.0 and present.max() <= 1.0):
        return 0.0, 1.0
    low, high = (float(x) for x in np.percentile(present, [5, 95]))
    return (low, high) if high > low else (low - 0.5, high + 0.5)  # every score the same: one mid colour


def symmetric_range(values, floor: float = 0.05) -> float:
    """The half-width of a diverging colour scale centred on 0: the 95th percentile of |value| (one outlier
    does not flatten the rest), at least ``floor``, so that noise around 0 is not drawn as a strong colour."""
    present = np.abs(np.asarray([v for v in values if v is not None], dtype=float))
    if not present.size:
        return floor
    return max(floor, round(float(np.percentile(present, 95)), 4))
