"""What the OpenAI-compatible endpoint can serve, and what its shadow comparisons found."""

from __future__ import annotations

from typing import Any

from django.db.models import Avg, Count, Max, Q, QuerySet

from arena.core.states import State
from arena.registry.models import Entry, Kind, MergeState
from arena.serving.models import ShadowConfig, ShadowSample
from arena.teams.models import Team


def servable_entries(team: Team) -> QuerySet[Entry]:
    # A merge is a model once its weights are built; before that it has nothing to serve.
    return Entry.objects.filter(team=team).exclude(Q(kind=Kind.MERGE) & ~Q(materialization__state=MergeState.DONE))


# Each side's cost of one sampled request (ShadowSample's entry_* and shadow_* columns).
MEASURES = ("tokens", "calls", "compute_s", "latency_s", "usd")


def shadow_comparisons(entry: Entry) -> list[dict[str, Any]]:
    """Per shadow that answered ``entry``'s sampled requests: how often they agree, each side's mean cost
    and latency, and the judge's preference; the current shadow first, then by the latest sample."""
    done = Q(state=State.DONE)
    judged = done & ~Q(preferred="")
    rows = (
        ShadowSample.objects.filter(entry=entry)
        .values("shadow_id", "shadow__name")
        .annotate(
            samples=Count("pk", filter=done),
            pending=Count("pk", filter=Q(state__in=[State.QUEUED, State.RUNNING])),
            failed=Count("pk", filter=Q(state=State.FAILED)),
            agreed=Count("pk", filter=done & Q(agree=True)),
            judged=Count("pk", filter=judged),
            entry_wins=Count("pk", filter=judged & Q(preferred="entry")),
            shadow_wins=Count("pk", filter=judged & Q(preferred="shadow")),
            ties=Count("pk", filter=judged & Q(preferred="tie")),
            latest=Max("created_at"),
            **{
                f"{side}_{measure}": Avg(f"{side}_{measure}", filter=done)
                for side in ("entry", "shadow")
                for measure in MEASURES
            },
        )
    )
    current = ShadowConfig.objects.filter(entry=entry).values_list("shadow_id", flat=True).first()
    out = []
    for row in sorted(rows, key=lambda r: (r["shadow_id"] != current, -r["latest"].timestamp())):
        n, judged_n = row["samples"], row["judged"]
        out.append(
            {
                "shadow": row["shadow__name"],
                "current": row["shadow_id"] == current,
                "samples": n,
                "pending": row["pending"],
                "failed": row["failed"],
                "agreement": round(row["agreed"] / n, 4) if n else None,
                "cost": {
                    side: {m: _mean(row[f"{side}_{m}"], 12 if m == "usd" else 4) for m in MEASURES}
                    for side in ("entry", "shadow")
                },
                "judge": {
                    "judged": judged_n,
                    "entry_wins": row["entry_wins"],
                    "shadow_wins": row["shadow_wins"],
                    "ties": row["ties"],
                    # The shadow's win rate, a tie counting half (as a run's judge scores it).
                    "shadow_preferred": round((row["shadow_wins"] + row["ties"] / 2) / judged_n, 4)
                    if judged_n
                    else None,
                },
            }
        )
    return out


def _mean(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def shadow_samples(entry: Entry, limit: int = 20) -> list[dict[str, Any]]:
    """The latest sampled requests of ``entry``, each with both answers, agreement, costs and verdict."""
    return [
        {
            "id": s.pk,
            "shadow": s.shadow.name,
            "state": s.state,
            "error": s.error,
            "prompt_digest": s.prompt_digest,
            "prompt": s.prompt,
            "entry_answer": s.entry_answer,
            "shadow_answer": s.shadow_answer,
            "agree": s.agree,
            "preferred": s.preferred or None,
            "judge": s.judge.name if s.judge else None,
            "entry_cost": {m: getattr(s, f"entry_{m}") for m in MEASURES},
            "shadow_cost": {m: getattr(s, f"shadow_{m}") for m in MEASURES},
            "created_at": s.created_at.isoformat(),
        }
        for s in ShadowSample.objects.filter(entry=entry).select_related("shadow", "judge")[:limit]
    ]
