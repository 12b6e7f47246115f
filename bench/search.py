"""Blend search against the hand-made blends on the built-in suites, with the offline models.

For each suite, the members' answers come from bench/strategies.py's cache (whatever is missing is
generated and cached the same way). The search (ensembles/search.py) sees the dev split only: it
tries every strategy over every member subset with a few parameters each, estimates each by 5-fold
cross-validation on dev, and picks the candidate with the best dev estimate within the budget. That
pick is then fitted on all of dev and scored on test, next to every hand-made blend of
bench/strategies.py (fitted on dev, scored on test) and the members. Costs are counted as the arena
counts them: the members a decision consulted, per item.

    ARENA_DATA_DIR=data/test .venv/bin/python bench/search.py --suites arithmetic,logic,mc_knowledge --dev 40 --test 80

Models come from $ARENA_DATA_DIR/models (`manage.py fetch_models` puts them there).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.strategies import (  # noqa: E402
    BLENDS,
    MEMBERS,
    MODELS,
    answer_items,
    build,
    member_answers,
    open_members,
    suite_for,
)
from ensembles import stats  # noqa: E402
from ensembles.search import Candidate, Cost, DevItem, cross_validate, search_blends  # noqa: E402
from ensembles.strategies import MiniLMEmbedder  # noqa: E402
from ensembles.suites import Suite as LibSuite  # noqa: E402


@dataclass
class Tested:
    """One entry's test-split result."""

    label: str
    chosen: str  # how it was chosen
    values: list[float]
    cost: Cost
    dev: str = ""  # its dev estimate (cross-validated), shown
    dev_quality: float | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


def on_test(suite: LibSuite, answers, candidate: Candidate, score) -> tuple[list[float], Cost]:
    """Fit ``candidate`` on all of dev (if it learns), answer every test item; its values and mean cost."""
    dev = [i for i, it in enumerate(suite.items) if it.split == "dev"]
    test = [i for i, it in enumerate(suite.items) if it.split == "test"]
    refs = [suite.reference_answer(it) for it in suite.items]
    inputs = [it.input for it in suite.items]

    def subset(i: int):
        by_member = {a.member: a for a in member_answers(answers, i)}
        return [by_member[m] for m in candidate.members]

    strategy = build(candidate.strategy, candidate.params)
    if strategy.needs_fit:
        kwargs = {"dev_inputs": [inputs[i] for i in dev]}
        if "scorer" in inspect.signature(strategy.fit).parameters:  # as bench/strategies.py fits the ranker
            kwargs["scorer"] = lambda ans, ref: float(ans.strip() == ref.strip())
        strategy.fit([subset(i) for i in dev], [refs[i] for i in dev], **kwargs)
    values, costs = [], []
    for i in test:
        decision = strategy.combine(subset(i), item_input=inputs[i])
        values.append(score(i, decision.answer))
        used = list(candidate.members) if decision.consulted is None else decision.consulted
        costs.append(
            Cost(
                decision.member_calls,
                sum(answers[m][i].tokens for m in used) + decision.calls.tokens,
                sum(answers[m][i].seconds for m in used) + decision.calls.compute_s,
            )
        )
    return values, Cost(*(float(np.mean([c.get(m) for c in costs])) for m in ("calls", "tokens", "seconds")))


def compare(suite: LibSuite, answers, budgets: list[float | None], metric: str, folds: int, seed: int, log) -> str:
    members = list(answers)
    refs = [suite.reference_answer(it) for it in suite.items]

    def score(i: int, answer: str) -> float:
        item = suite.items[i]
        if suite.by_loglikelihood or item.is_multiple_choice:
            return float(answer.strip().upper()[:1] == refs[i])
        return suite.score(item, answer)[1]

    test = [i for i, it in enumerate(suite.items) if it.split == "test"]
    rows: list[Tested] = []
    for m in members:
        a = answers[m]
        rows.append(
            Tested(
                m,
                "member",
                [score(i, a[i].answer) for i in test],
                Cost(1, float(np.mean([a[i].tokens for i in test])), float(np.mean([a[i].seconds for i in test]))),
            )
        )
    best_member = max(rows, key=lambda r: r.mean)
    dev = [i for i, it in enumerate(suite.items) if it.split == "dev"]
    items = [
        DevItem(
            key=str(i),
            answers=member_answers(answers, i),
            costs={m: Cost(1, answers[m][i].tokens, answers[m][i].seconds) for m in members},
            reference=refs[i],
            input=suite.items[i].input,
        )
        for i in dev
    ]
    embedder = MiniLMEmbedder(MODELS / "all-MiniLM-L6-v2")

    def dev_score(item: DevItem, answer: str) -> float:
        return score(int(item.key), answer)

    hand = []
    for label, name, params in BLENDS:
        candidate = Candidate(name, tuple(members), params)
        try:
            values, cost = on_test(suite, answers, candidate, score)
            estimate = cross_validate(items, dev_score, candidate, folds=folds, seed=seed, embedder=embedder)
        except Exception as exc:  # noqa: BLE001 - a strategy that cannot run here is reported, not fatal
            log(f"  {label}: {type(exc).__name__}: {exc}")
            continue
        dev_cv = f"{estimate.quality:.3f} ± {estimate.stderr:.3f}" if estimate.ok else ""
        hand.append(Tested(label, "hand-made", values, cost, dev=dev_cv, dev_quality=estimate.quality))
    lines = []
    picks = []
    for budget in budgets:
        started = time.perf_counter()
        result = search_blends(
            items,
            dev_score,
            members=members,
            metric=metric,
            budget=budget,
            folds=folds,
            seed=seed,
            embedder=embedder,
        )
        took = time.perf_counter() - started
        best = result.best()
        where = "no budget" if budget is None else f"≤ {budget:g} {metric}/item"
        lines.append(
            f"search ({where}): {result.evaluated} candidates in {took:.1f} s, "
            f"{len(result.pareto)} on the Pareto set, {sum(not e.ok for e in result.estimates)} could not be estimated"
        )
        if result.redundant:
            copies = ", ".join(
                f"{copy} (answers as {original} on every dev item)" for copy, original in result.redundant.items()
            )
            lines.append(f"  never paired with the member it copies: {copies}")
        if best is None:
            continue
        values, cost = on_test(suite, answers, best.candidate, score)
        picks.append(
            Tested(
                best.candidate.label,
                f"search pick, {where}",
                values,
                cost,
                dev=f"{best.quality:.3f} ± {best.stderr:.3f}",
            )
        )
        # How well the dev estimates rank candidates: the Pareto set's test scores, cheapest first.
        frontier = []
        for i in result.pareto:
            e = result.estimates[i]
            v, _ = on_test(suite, answers, e.candidate, score)
            frontier.append(f"{e.candidate.label}: dev {e.quality:.3f} → test {np.mean(v):.3f}")
        lines.append("  Pareto set, cheapest first: " + "; ".join(frontier))

    by_test = max(hand, key=lambda r: (r.mean, -r.cost.calls))
    by_dev = max(hand, key=lambda r: (r.dev_quality if r.dev_quality is not None else -1.0, -r.cost.calls))
    shown = [best_member, by_test, by_dev] if by_dev is not by_test else [best_member, by_test]
    by_test.chosen = "best hand-made by test score (hindsight)"
    by_dev.chosen = (
        "best hand-made by dev CV" if by_dev is not by_test else "best hand-made by test score and by dev CV"
    )
    best_member.chosen = "best member by test score"
    table = [
        "| entry | chosen as | dev CV ± SE | test score [95% CI] | lift over best member [95% CI] | calls/item | tokens/item | CPU-s/item |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in [*shown, *picks]:
        iv = stats.bootstrap_mean(r.values, seed=seed)
        lift = ""
        if r is not best_member:
            d = stats.paired_bootstrap_diff(r.values, best_member.values, seed=seed)
            lift = f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]"
        table.append(
            f"| {r.label} | {r.chosen} | {r.dev or '–'} | {iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}] | {lift} | "
            f"{r.cost.calls:.2f} | {r.cost.tokens:.0f} | {r.cost.seconds:.2f} |"
        )
    return "\n".join([*table, "", *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="arithmetic,logic,mc_knowledge")
    parser.add_argument("--dev", type=int, default=40)
    parser.add_argument("--test", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--metric", default="calls", choices=["calls", "tokens", "seconds"])
    parser.add_argument("--budgets", default="none,1.5", help="comma-separated budgets per item; none: no limit")
    parser.add_argument(
        "--mc-scoring", default="loglikelihood_norm", choices=["generate", "loglikelihood", "loglikelihood_norm"]
    )
    args = parser.parse_args()
    budgets = [None if b == "none" else float(b) for b in args.budgets.split(",")]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    backends, fingerprints, cache = open_members()
    out = [
        f"Members: {', '.join(MEMBERS)} (Q4 GGUF, CPU, greedy). Dev {args.dev} / test {args.test} items per suite; "
        f"{args.folds}-fold CV on dev; seed {args.seed}.",
        "",
    ]
    for name in args.suites.split(","):
        suite = suite_for(name, args.dev, args.test, args.mc_scoring)
        log(f"{name}: {len(suite.items)} items")
        answers = answer_items(suite, backends, fingerprints, cache, log)
        out += [f"**{name}**", "", compare(suite, answers, budgets, args.metric, args.folds, args.seed, log), ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
