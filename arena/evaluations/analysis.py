"""What a run's stored scores say beyond each entry's own score: computed from the scores, stored by no one here.

Pure reads: the run's analyse step stores what it keeps in ``Run.results``; pages show that, and
compute it on the fly for a run that finished without it.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from arena.evaluations.models import Run, RunEntry, Score, State
from arena.registry.models import Kind
from ensembles import copula

# Where the run's analyse step keeps the curve in Run.results.
SIZE_CURVE = "size_curve"


def size_curve(run: Run) -> dict | None:
    """Majority vote over the best n single models (n = 1..N) measured on each split of the run, next to
    what the Gaussian-copula model of their correlated errors predicts (ensembles.copula) and the level
    it converges to as members are added.

    Members are ranked, and the model fitted, on dev (on the report split when the run has no dev
    items). Only where every score is 0 or 1 (the rule the McNemar test uses); None otherwise, for
    judge runs, or with fewer than two finished single models. Reads the run's stored scores and
    writes nothing; ``run.suite`` should be loaded with the run.
    """
    if run.judge_id or run.suite.task_type == "judge":
        return None
    names = dict(
        RunEntry.objects.filter(run=run, state=State.DONE)
        .exclude(entry__kind=Kind.BLEND)
        .values_list("entry_id", "entry__name")
    )
    if len(names) < 2:
        return None
    grid: dict[str, dict[int, dict[int, tuple[str, float]]]] = defaultdict(lambda: defaultdict(dict))
    for split, item_id, entry_id, prediction, value in Score.objects.filter(run=run, entry_id__in=names).values_list(
        "item__split", "item_id", "entry_id", "prediction", "value"
    ):
        grid[split][item_id][entry_id] = (prediction, value)
    if any(v not in (0.0, 1.0) for rows in grid.values() for row in rows.values() for _, v in row.values()):
        return None

    def complete(split: str) -> list[int]:
        return [i for i, row in grid[split].items() if len(row) == len(names)]

    fit_split = "dev" if complete("dev") else run.report_split
    fit_items = complete(fit_split)
    if not fit_items:
        return None
    accuracy = {e: float(np.mean([grid[fit_split][i][e][1] for i in fit_items])) for e in names}
    order = sorted(names, key=lambda e: (-accuracy[e], names[e]))
    fit = copula.fit_copula([[grid[fit_split][i][e][1] for i in fit_items] for e in order])
    predicted = copula.predicted_vote_accuracy(fit.accuracy, fit.correlation, seed=run.pk)
    measured, oracle, items = {}, {}, {}
    for split in sorted(run.splits, key=lambda s: s != fit_split):
        if rows := complete(split):
            answers = [[grid[split][i][e][0] for i in rows] for e in order]
            values = [[grid[split][i][e][1] for i in rows] for e in order]
            measured[split] = [round(x, 4) for x in copula.vote_curve(answers, values)]
            # The ceiling of any blend of the best n: an item counts when at least one of them is right.
            oracle[split] = [round(float(x), 4) for x in np.maximum.accumulate(values, axis=0).mean(axis=1)]
            items[split] = len(rows)
    asymptote = copula.vote_asymptote(fit.mean_accuracy, fit.mean_correlation)
    curve = {
        "members": [names[e] for e in order],
        "sizes": list(range(1, len(order) + 1)),
        "fit_split": fit_split,
        "accuracy": [round(float(p), 4) for p in fit.accuracy],
        "mean_accuracy": round(fit.mean_accuracy, 4),
        "mean_correlation": None if np.isnan(fit.mean_correlation) else round(fit.mean_correlation, 3),
        "correlation": [[round(float(x), 3) for x in row] for row in fit.correlation],
        "predicted": [round(float(x), 4) for x in predicted],
        "asymptote": None if np.isnan(asymptote) else round(asymptote, 4),
        "measured": measured,
        "oracle": oracle,
        "items": items,
    }
    report = run.report_split if run.report_split in measured else fit_split
    curve["report_split"] = report
    curve["reading"] = _size_reading(curve, report)
    return curve


def _size_reading(curve: dict, split: str) -> str:
    """One sentence: where the model says the vote goes, and where the measured vote peaks."""
    p, rho, limit = curve["mean_accuracy"], curve["mean_correlation"], curve["asymptote"]
    if limit is None:
        model = f"Every member is always right or always wrong on {curve['fit_split']}: the model has nothing to fit"
    elif rho <= 0:
        model = (
            f"The model predicts majority vote of these members keeps gaining toward {limit:.0%} as members are "
            f"added, as Condorcet says: their errors do not correlate (ρ̄={rho:.2f})"
        )
    elif p > 0.5:
        model = (
            f"The model predicts majority vote of these members levels off at {limit:.0%}: "
            f"the members' errors correlate at ρ̄={rho:.2f}"
        )
    elif p < 0.5:
        model = (
            f"The model predicts majority vote of these members sinks toward {limit:.0%}: they are right on fewer "
            f"than half the {curve['fit_split']} items on average (p̄={p:.2f}) and their errors correlate at ρ̄={rho:.2f}"
        )
    else:
        model = f"The model predicts majority vote of these members stays at 50% (p̄=0.50, ρ̄={rho:.2f})"
    measured = curve["measured"][split]
    best = int(np.argmax(measured))  # the smallest vote that reaches the best score
    if best == 0:
        found = f"measured on {split}, no vote beats the best member alone ({measured[0]:.0%})"
    else:
        found = f"measured on {split}, the best {best + 1} of {len(measured)} score highest ({measured[best]:.0%})"
    return f"{model}; {found}."
