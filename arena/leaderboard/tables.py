"""The boards' rows as HTML: a page renders them, and every live event carries them to the open
pages, which swap them in (static/arena/live.js), so the markup is written here only.

Written in Python rather than as a template: 500 rows of 13 cells took Django's template engine
~90 ms, over half the page's budget, and formatting them here takes ~2 ms. (A run's rows, one per
entry, are few enough for their template: arena/evaluations/tables.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe

REGRESSED = (
    ' <span class="state failed regressed" title="scored lower than its previous result by more than the 95% '
    'interval allows">regressed</span>'
)
COLUMNS = 14  # the board's cells in a row, "#" included


def empty_board(team_slug: str, *, filtered: bool = False, colspan: int = COLUMNS, what: str = "this suite") -> str:
    """What an empty board says: what to do next, each step a link to where it is done; with filters
    (``filtered``) that leave nothing, how to see every entry."""
    if filtered:
        return (
            f'<tr class="empty"><td colspan="{colspan}" class="muted">No entry on this board matches these filters: '
            '<a href="?">show every entry</a>.</td></tr>'
        )
    dashboard, suites = reverse("dashboard", args=[team_slug]), reverse("suites", args=[team_slug])
    return (
        f'<tr class="empty"><td colspan="{colspan}">Nothing evaluated on {what} yet. Next: '
        f'<a href="{dashboard}#register-model">register a model</a>, '
        f'<a href="{suites}">upload or pick a suite</a>, then '
        f'<a href="{dashboard}#start-run">start a run</a> on it.</td></tr>'
    )


def _num(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _evaluated(iso: str | None) -> str:
    """A short UTC time ("23 Nov 02:21") with the full one on hover."""
    if not iso:
        return ""
    at = datetime.fromisoformat(iso).astimezone(UTC)
    return f'<time datetime="{escape(iso)}" title="{at:%Y-%m-%d %H:%M:%S} UTC">{at:%d %b %H:%M}</time>'


def items(done: int, total: int) -> str:
    """A count of items with its unit: "40 of 50 items"."""
    return f"{done} of {total} item{'' if total == 1 else 's'}"


def board_rows(rows: list[dict], team_slug: str, *, filtered: bool = False) -> SafeString:
    """The board's rows; with none, what to do next (``filtered``: the page's filters left none out of some)."""
    out = []
    for position, r in enumerate(rows, start=1):
        name = escape(r["entry"])
        if r["score"] is not None:
            score = f'{r["score"]:.3f} <span class="ci">[{_num(r["ci_low"], 3)}, {_num(r["ci_high"], 3)}]</span>'
        else:
            state = escape(r["state"])
            score = f'<span class="state {state}">{state} {items(r["done_items"], r["total_items"])}</span>'
        lift = ""
        if r["lift"] is not None:
            p = f", McNemar p={r['lift_p']:.3f}" if r["lift_p"] is not None else ""
            lift = (
                f'{r["lift"]:.3f} <span class="ci">[{_num(r["lift_low"], 3)}, {_num(r["lift_high"], 3)}] '
                f"vs {escape(r['best_member'] or '')}{p}</span>"
            )
        latency = f"{r['latency_p50']:.2f} / {_num(r['latency_p95'], 2)}" if r["latency_p50"] is not None else ""
        rank = "" if r["rank_upper_bound"] is None else r["rank_upper_bound"]
        members = " ".join(f'<span class="chip">{escape(m)}</span>' for m in r["members"])
        out.append(
            # A row without a score has earned no place yet: "–" rather than a rank.
            f'<tr data-entry="{name}">\n  <td>{position if r["score"] is not None else "–"}</td>\n'
            f'  <td class="name"><a href="/t/{escape(team_slug)}/entries/{r["entry_id"]}/">{name}</a>'
            f"{REGRESSED if r.get('regressed') else ''}</td>\n"
            f'  <td><span class="kind">{escape(r["kind"])}</span></td>\n'
            f'  <td class="num">{score}</td>\n  <td class="num n">{"" if r["score"] is None else r["n"]}</td>\n'
            f'  <td class="num">{rank}</td>\n  <td class="num lift">{lift}</td>\n'
            f'  <td class="members">{members}</td>\n'
            f'  <td class="num">{r["member_calls"]}</td><td class="num">{r["tokens"]}</td>'
            f'<td class="num">{r["compute_s"]:.1f}</td>\n  <td class="num">{latency}</td>\n'
            f'  <td>{escape(str(r["suite_version"]))}</td><td class="num">{_evaluated(r["evaluated_at"])}</td>\n</tr>'
        )
    return mark_safe("".join(out) or empty_board(team_slug, filtered=filtered))  # noqa: S308 - escaped


def across_rows(rows: list[dict], suites: list[str], team_slug: str, *, filtered: bool = False) -> SafeString:
    """The all-suites table: an entry per row, its latest score on each suite linking to that run."""
    slug = escape(team_slug)
    out = []
    for position, r in enumerate(rows, start=1):
        name = escape(r["entry"])
        cells = "".join(
            f'<td class="num"><a href="/t/{slug}/runs/{r["runs"][s]}/">{r["scores"][s]:.3f}</a></td>'
            if s in r["scores"]
            else '<td class="num"><span class="muted">–</span></td>'
            for s in suites
        )
        out.append(
            f'<tr data-entry="{name}"><td>{position}</td><td><a href="/t/{slug}/entries/{r["entry_id"]}/">{name}</a></td>'
            f'<td><span class="kind">{escape(r["kind"])}</span></td>'
            f'<td class="num">{_num(r["win_rate"], 3) or "–"}</td><td class="num">{r["mean_score"]:.3f}</td>'
            f'<td class="num">{r["suites"]}</td>{cells}</tr>'
        )
    empty = empty_board(team_slug, filtered=filtered, colspan=6 + len(suites), what="any suite")
    return mark_safe("".join(out) or empty)  # noqa: S308 - every value above is escaped
