"""The run page's live table as HTML: the page renders it, and every live event carries it to the open
page, which swaps it in (static/arena/live.js), so the markup is written once, in its template.
"""

from __future__ import annotations

from django.template.loader import render_to_string
from django.utils.safestring import SafeString


def run_rows(entries: list[dict]) -> SafeString:
    """The run page's table: an entry per row, its progress, score and lift (a run snapshot's entries)."""
    return render_to_string("evaluations/_run_rows.html", {"entries": entries})
