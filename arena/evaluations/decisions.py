"""How a blend decided one item, as sentences and tables a person reads (the item drill-down's "How").

Each strategy of ensembles/strategies records its decision in ``Score.details`` in a shape of its own:
a vote's tally, a router's scores, a cascade's confidences, a ranker's duels. ``explain`` turns each
known shape into a few sentences and tables, next to the answer and score of every member it read;
keys it does not know, and shapes it does not know at all, become a key/value table with every value
written out in words. Cost accounting (which stored generations a decision read, by id) is summed
into one sentence, never shown as ids.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ensembles.answers import vote_key

# member name -> (its answer on the item, its score there)
Answers = dict[str, tuple[str, float]]

# What the pipeline adds to a decision's details to add costs up through a hybrid's tree.
ACCOUNTING = "consumed"


def _fmt(value: Any) -> str:
    """A detail's value in words: numbers rounded, lists and mappings written out, nothing as JSON."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value) or "none"
    return str(value)


def _quote(answer: str) -> str:
    return f"“{answer}”" if answer else "no answer"


def _names(members) -> str:
    return ", ".join(members) or "none"


class _Explanation:
    """Sentences, tables and texts, built by one shape's reader."""

    def __init__(self, details: dict, answers: Answers, prediction: str):
        self.details, self.answers, self.prediction = details, answers, prediction
        self.summary: list[str] = []
        self.tables: list[dict] = []
        self.texts: list[dict] = []
        self.used: set[str] = {ACCOUNTING}

    def get(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.details.get(key, default)

    def known(self, *keys: str) -> None:
        """Keys the shape's sentences and tables already say (or that say nothing to a reader)."""
        self.used.update(keys)

    def table(self, caption: str, head: list[str], rows: list[tuple[list[Any], bool]]) -> None:
        """A table; each row its cells and whether it is what the blend chose."""
        self.tables.append(
            {
                "caption": caption,
                "head": head,
                "rows": [
                    {"cells": [c if isinstance(c, str) else _fmt(c) for c in cells], "chosen": chosen}
                    for cells, chosen in rows
                ],
            }
        )

    def chose(self, answer: str) -> bool:
        return bool(answer) and vote_key(answer) == vote_key(self.prediction)

    def members_of(self, answer: str) -> list[str]:
        """The members whose own answer on the item counts as ``answer`` in a vote."""
        key = vote_key(answer)
        return [m for m, (given, _) in self.answers.items() if vote_key(given) == key]

    def score_of(self, member: str) -> float | None:
        return self.answers[member][1] if member in self.answers else None

    def answer_of(self, member: str) -> str:
        return self.answers[member][0] if member in self.answers else "–"


# --- Each shape's reader --------------------------------------------------------------------------


def _tally(x: _Explanation, votes: dict[str, float], counted: str, who: Callable[[str], list[str]], who_head: str):
    """A tally of answers: each as given and as counted (case and spaces ignored), its count or weight, and who gave it."""
    rows = sorted(votes.items(), key=lambda kv: -kv[1])
    x.table(
        f"Tally: {counted} per answer",
        ["Answer", "Counted as", counted.capitalize(), who_head],
        [([answer, vote_key(answer), count, _names(who(answer))], x.chose(answer)) for answer, count in rows],
    )


def _vote(x: _Explanation) -> None:
    votes = x.get("votes") or {}
    supporters, abstained, tied = x.get("supporters") or [], x.get("abstained") or [], x.get("tied")
    total = sum(votes.values())
    if x.details.get("samples"):  # self-consistency: the ballots are one member's samples
        _samples(x, votes)
    else:
        if not votes:
            x.summary.append("No member gave an answer, so the vote gave none.")
        else:
            winner = next((a for a in votes if x.chose(a)), max(votes, key=lambda a: votes[a]))
            x.summary.append(
                f"Majority vote: {_quote(winner)} won with {votes[winner]:g} of {total:g} votes ({_names(supporters)})."
            )
        if tied:
            quoted = [_quote(t) for t in tied] if isinstance(tied, list) else []
            between = f" between {', '.join(quoted[:-1])} and {quoted[-1]}" if len(quoted) > 1 else ""
            x.summary.append(
                f"The top answers tied{between}; the blend's tie rule decided: the answer of the member with the "
                "better dev score (the member listed first where the run has no dev split), unless the blend is "
                "set to take the shortest answer."
            )
        _tally(x, votes, "votes", x.members_of, "Members")
    if abstained:
        x.summary.append(f"Gave no answer, so did not vote: {_names(abstained)}.")
    if x.get("fallback") == "vote":
        x.summary.insert(0, "No member had option probabilities to pool, so the blend fell back to a majority vote.")


def _samples(x: _Explanation, votes: dict[str, float]) -> None:
    member, samples = x.get("member"), x.get("samples")
    answers, seeds = x.get("sample_answers") or [], x.get("seeds") or []
    agreement, agreed = x.get("agreement"), x.get("agreed")
    if votes:
        winner = max(votes, key=lambda a: votes[a])
        x.summary.append(
            f"{member} was sampled {samples} times; the most common answer, {_quote(winner)}, came "
            f"{votes[winner]:g} times (agreement {_fmt(agreement)})"
            + ("." if agreed else ", below the agreement asked for.")
        )
    else:
        x.summary.append(f"{member} was sampled {samples} times and no sample gave an answer.")
    by_key: dict[str, list[str]] = {}
    for seed, answer in zip(seeds, answers, strict=False):
        by_key.setdefault(vote_key(answer), []).append(f"seed {seed}")
    _tally(x, votes, "samples", lambda a: by_key.get(vote_key(a), []), "Samples")


def _weighted(x: _Explanation) -> None:
    weights, member_weights = x.get("weights") or {}, x.get("member_weights") or {}
    rounds = x.get("rounds")
    supporters = x.get("supporters") or []
    total = sum(weights.values())
    if rounds is not None:
        how = "Boosting: each member's answer weighs the alphas it earned in the rounds fitted on dev"
    else:
        how = f"Weighted vote: each member's answer weighs its {(x.get('weighting') or 'weight').replace('_', ' ')}"
    if weights:
        winner = next((a for a in weights if x.chose(a)), max(weights, key=lambda a: weights[a]))
        x.summary.append(
            f"{how}; {_quote(winner)} carried the most weight, {weights[winner]:.3f} of "
            f"{total:.3f} ({_names(supporters)})."
        )
    else:
        x.summary.append(f"{how}; no member gave an answer.")
    _tally(x, weights, "weight", x.members_of, "Members")
    x.table(
        "Each member's weight",
        ["Member", "Answer", "Weight", "Score"],
        [([m, x.answer_of(m), w, x.score_of(m)], m in supporters) for m, w in member_weights.items()],
    )
    if rounds:
        x.known("classes")
        x.table(
            "Boosting rounds fitted on dev",
            ["Round", "Member picked", "Weighted dev error", "Alpha"],
            [([str(i), r.get("member"), r.get("error"), r.get("alpha")], False) for i, r in enumerate(rounds, 1)],
        )


def _router(x: _Explanation) -> None:
    chosen, scores, fallback = x.get("chosen"), x.get("scores") or {}, x.get("fallback")
    ranked = sorted(scores, key=lambda m: -scores[m])
    if fallback:
        x.summary.append(
            f"None of the members the router was trained to choose answered this item, so the first member "
            f"that answered, {chosen or 'none'}, did."
        )
    elif chosen:
        x.summary.append(
            f"The router chose {chosen}: of the members that answered, the classifier trained on dev (which member "
            f"gets items like this one right) gave it the highest score, {_fmt(scores.get(chosen))}."
        )
        skipped = [m for m in ranked[: ranked.index(chosen)] if m not in x.answers] if chosen in ranked else []
        if skipped:
            x.summary.append(f"Scored higher but gave no answer here: {_names(skipped)}.")
    x.table(
        "Router's score per member",
        ["Member", "Router's score", "Answer", "Score"],
        [([m, scores[m], x.answer_of(m), x.score_of(m)], m == chosen) for m in ranked],
    )


def _cascade(x: _Explanation) -> None:
    threshold, consulted = x.get("threshold"), x.get("consulted") or []
    confidences, answered_by, dev = x.get("confidences") or {}, x.get("answered_by"), x.get("dev")
    last = confidences.get(answered_by)
    if answered_by is None:
        x.summary.append("The cascade had no member to ask.")
    elif last is not None and threshold is not None and last >= threshold:
        x.summary.append(
            f"The cascade asks its members in order and stops at the first one at least {threshold:.3f} sure: "
            f"it stopped at {answered_by} (confidence {last:.3f}) after asking {len(consulted)} "
            f"member{'s' if len(consulted) != 1 else ''}."
        )
    else:
        x.summary.append(
            f"No member asked was at least {_fmt(threshold)} sure, so the last one, {answered_by}, answered."
        )
    if isinstance(dev, dict):
        x.summary.append(
            f"The threshold was chosen on dev: accuracy {_fmt(dev.get('accuracy'))} at {_fmt(dev.get('cost'))} "
            "member calls per item."
        )
    x.table(
        "Members asked, in order",
        ["Step", "Member", "Confidence", "Sure enough?", "Answer", "Score"],
        [
            (
                [
                    str(i),
                    m,
                    confidences.get(m),
                    "–" if confidences.get(m) is None else _fmt(confidences[m] >= (threshold or 0.0)),
                    x.answer_of(m),
                    x.score_of(m),
                ],
                m == answered_by,
            )
            for i, m in enumerate(consulted, 1)
        ],
    )


def _ranker(x: _Explanation) -> None:
    _ranking(x)
    if ranking := x.get("ranking"):
        x.summary.append(f"The blend gave {ranking[0]}'s answer.")


def _ranking(x: _Explanation) -> None:
    ranking, comparisons = x.get("ranking") or [], x.get("comparisons")
    scores, wins, duels = x.get("scores") or {}, x.get("wins") or {}, x.get("duels")
    aggregation = x.get("aggregation")
    if ranking:
        x.summary.append(
            f"The ranker compared the members' answers in pairs ({comparisons} comparisons, "
            f"aggregated by {(aggregation or 'its rule').replace('_', ' ')}) and put {ranking[0]} first."
        )
    head = ["Rank", "Member"]
    if scores:
        head.append("Summed margin")
    if wins:
        head.append("Duels won")
    x.table(
        "The ranking",
        [*head, "Answer", "Score"],
        [
            (
                [str(i), m]
                + ([scores.get(m)] if scores else [])
                + ([wins.get(m)] if wins else [])
                + [x.answer_of(m), x.score_of(m)],
                i == 1,
            )
            for i, m in enumerate(ranking, 1)
        ],
    )
    if duels:
        x.table("Duels, in order", ["Winner", "Loser"], [([w, loser], False) for w, loser in duels])


def _stacking(x: _Explanation) -> None:
    probabilities, model = x.get("probabilities") or {}, x.get("model")
    unknown = x.get("unknown_members") or []
    x.known("supporters")
    meta = {"logistic_regression": "a logistic regression fitted on dev", "vote_share": "the vote share alone"}
    if probabilities:
        best = max(probabilities, key=lambda a: probabilities[a])
        x.summary.append(
            f"Stacking: the meta-model ({meta.get(model, model)}) scored each distinct answer by how likely "
            f"it is right; {_quote(best)} scored highest, {probabilities[best]:.3f}."
        )
    else:
        x.summary.append("Stacking: no member gave an answer.")
    if unknown:
        x.summary.append(f"Not seen on dev, so counted only through the vote share: {_names(unknown)}.")
    x.table(
        "Meta-model's probability per answer",
        ["Answer", "Counted as", "Probability right", "Members"],
        [
            ([a, vote_key(a), p, _names(x.members_of(a))], x.chose(a))
            for a, p in sorted(probabilities.items(), key=lambda kv: -kv[1])
        ],
    )


def _pool(x: _Explanation) -> None:
    probabilities, pool = x.get("probabilities") or {}, x.get("pool")
    pooled, unscored = x.get("pooled") or [], x.get("unscored") or []
    if probabilities:
        best = max(probabilities, key=lambda a: probabilities[a])
        x.summary.append(
            f"The members' probabilities of each option were pooled ({(pool or '').replace('_', '-')} pool): "
            f"{_quote(best)} is the most likely, {probabilities[best]:.3f}."
        )
    x.summary.append(
        f"Pooled: {_names(pooled)}." + (f" Without option scores: {_names(unscored)}." if unscored else "")
    )
    x.table(
        "Pooled probability per option",
        ["Option", "Probability", "Members who chose it"],
        [
            ([o, p, _names(x.members_of(o))], x.chose(o))
            for o, p in sorted(probabilities.items(), key=lambda kv: -kv[1])
        ],
    )


def _bagging(x: _Explanation) -> None:
    votes, estimators, base = x.get("votes") or {}, x.get("estimator_answers") or [], x.get("base")
    if votes:
        winner = max(votes, key=lambda a: votes[a])
        x.summary.append(
            f"Bagging: {len(estimators)} {base} blends, each fitted on a resample of dev, voted; "
            f"{_quote(winner)} won {votes[winner]:g} of {len(estimators)}."
        )
    by_key: dict[str, list[str]] = {}
    for i, answer in enumerate(estimators, 1):
        by_key.setdefault(vote_key(answer), []).append(f"#{i}")
    _tally(x, votes, "votes", lambda a: by_key.get(vote_key(a), []), "Estimators")


def _selection(x: _Explanation) -> None:
    chosen, gain, skipped = x.get("chosen") or [], x.get("gain") or [], x.get("skipped") or []
    x.summary.append(
        "Only the members picked on dev by mutual information voted, in pick order (the first pick breaks ties)"
        + (f"; left out: {_names(skipped)}." if skipped else ".")
    )
    x.table(
        "Members picked on dev",
        ["Pick", "Member", "Information gained (bits)", "Answer", "Score"],
        [
            ([str(i), m, g, x.answer_of(m), x.score_of(m)], False)
            for i, (m, g) in enumerate(zip(chosen, gain, strict=False), 1)
        ],
    )
    _vote(x)


def _fusion(x: _Explanation) -> None:
    fuser, candidates = x.get("fuser"), x.get("candidates") or []
    if x.details.get("ranking"):
        _ranking(x)
        x.summary.append(f"The top {len(candidates)} went to the fuser.")
    x.summary.append(f"{fuser} read the answers of {_names(candidates)} and wrote the blend's answer.")
    x.table(
        "Answers the fuser read",
        ["Member", "Answer", "Score"],
        [([m, x.answer_of(m), x.score_of(m)], False) for m in candidates],
    )
    x.texts.append({"caption": f"What {fuser} wrote", "text": x.get("fused_text") or ""})


def _layers(x: _Explanation) -> None:
    aggregator, layers = x.get("aggregator"), x.get("layers") or []
    x.summary.append(
        f"Mixture of agents: {len(layers)} layer{'s' if len(layers) != 1 else ''} of proposers, each reading the "
        f"answers of the layer before; {aggregator} aggregated the last."
    )
    x.table(
        "Answers per layer",
        ["Layer", "Proposer", "Answer"],
        [([str(i), m, a or "–"], False) for i, layer in enumerate(layers, 1) for m, a in layer.items()],
    )
    x.texts.append({"caption": f"What {aggregator} wrote", "text": x.get("aggregated_text") or ""})


def _chain(x: _Explanation) -> None:
    chain = x.get("chain") or []
    if chain:
        x.summary.append(
            f"A chain: it started from {chain[0].get('member')}'s answer and passed it through "
            f"{_names([step.get('member') for step in chain[1:]])}; the last step's answer is the blend's."
        )
    x.table(
        "Each step",
        ["Step", "Member", "Answer"],
        [([str(i), s.get("member"), s.get("answer") or "–"], i == len(chain)) for i, s in enumerate(chain, 1)],
    )


# The first shape whose keys a decision holds reads it (a selection's details hold a vote's too).
SHAPES: list[tuple[tuple[str, ...], Callable[[_Explanation], None]]] = [
    (("chain",), _chain),
    (("layers", "aggregator"), _layers),
    (("fuser", "fused_text"), _fusion),
    (("threshold", "consulted"), _cascade),
    (("estimator_answers",), _bagging),
    (("chosen", "gain"), _selection),
    (("chosen", "scores"), _router),
    (("ranking", "aggregation"), _ranker),
    (("member_weights", "weights"), _weighted),
    (("pool", "probabilities"), _pool),
    (("model", "probabilities"), _stacking),
    (("votes",), _vote),
]


def _calibration(x: _Explanation) -> None:
    calibration = x.get("calibration")
    if isinstance(calibration, dict) and calibration:
        x.table(
            "Members' confidences calibrated on dev (temperature scaling)",
            ["Member", "Temperature", "Dev answers", "Calibration error before", "after"],
            [
                ([m, c.get("temperature"), c.get("answers"), c.get("ece_before"), c.get("ece_after")], False)
                for m, c in calibration.items()
                if isinstance(c, dict)
            ],
        )


def _cost(x: _Explanation) -> None:
    consumed = x.details.get(ACCOUNTING)
    if isinstance(consumed, dict):
        generations = len(consumed.get("generations") or {})
        own = sum(int(c[0]) for c in (consumed.get("own_calls") or {}).values() if c)
        x.summary.append(
            f"It read {generations} stored answer{'s' if generations != 1 else ''}"
            + (
                f" and made {own} call{'s' if own != 1 else ''} of its own (its own and its member blends')."
                if own
                else "."
            )
        )


def explain(details: dict | None, answers: Answers, prediction: str) -> dict:
    """How a blend decided, from its decision's ``details``; ``answers``: every member's answer and score on
    the item; ``prediction``: the blend's own answer. {"summary": [sentence], "tables": [{"caption", "head",
    "rows": [{"cells", "chosen"}]}], "texts": [{"caption", "text"}]}."""
    x = _Explanation(details or {}, answers, prediction)
    read = next((read for keys, read in SHAPES if all(k in x.details for k in keys)), None)
    if read is not None:
        read(x)
    _calibration(x)
    _cost(x)
    rest = {k: v for k, v in x.details.items() if k not in x.used}
    if rest:
        x.table(
            "Details" if read is None else "Other details",
            ["Detail", "Value"],
            [([k.replace("_", " "), _fmt(v)], False) for k, v in rest.items()],
        )
    return {"summary": x.summary, "tables": x.tables, "texts": x.texts}
