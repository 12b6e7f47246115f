"""Every strategy on the built-in suites with the offline models: score, interval, lift, cost.

Members answer each item once (greedy; answers cached on disk, so a rerun only recombines);
learned strategies fit on the dev split and every number is on the test split. For each entry:
test score with a seeded bootstrap 95% interval, a blend's lift over its best member with a
paired bootstrap interval and McNemar's p-value, and cost per item (member calls, tokens,
CPU-seconds). Strategies that call models (the fuser, mixture of agents, pipeline) call them
here too, through the same cache.

    .venv/bin/python bench/strategies.py --suites arithmetic,logic,mc_knowledge --dev 48 --test 96

Models come from $ARENA_DATA_DIR/models (`manage.py fetch_models` puts them there).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ensembles import stats  # noqa: E402
from ensembles.backends import BackendOptions, DecodingParams, make_backend  # noqa: E402
from ensembles.strategies import STRATEGIES, MemberAnswer, MiniLMEmbedder  # noqa: E402
from ensembles.strategies.calls import CallResult, Sampling  # noqa: E402
from ensembles.suites import Suite as LibSuite  # noqa: E402
from ensembles.suites import get_builtin  # noqa: E402

DATA = Path(os.environ.get("ARENA_DATA_DIR", ROOT / "data"))
MODELS = DATA / "models"
CACHE = Path(os.environ.get("ARENA_CACHE_DIR", Path.home() / ".cache" / "ensemble-arena"))

MEMBERS = {
    "smollm2-chat": {"path": "SmolLM2-135M-Instruct.Q4_1.gguf", "chat_template": "auto"},
    "smollm2-plain": {"path": "SmolLM2-135M-Instruct.Q4_1.gguf", "chat_template": "off"},
    "gemma-3-270m": {"path": "gemma-3-270m-q4_k_m.gguf", "chat_template": "off"},
}
FUSER = "smollm2-chat"

# (row label, strategy name, params); the calling strategies run only where --calling is set.
BLENDS = [
    ("majority vote", "majority_vote", {}),
    ("weighted vote (dev accuracy)", "weighted_vote", {"weights": "dev_accuracy"}),
    ("weighted vote (confidence)", "weighted_vote", {"weights": "confidence"}),
    ("probability pool", "logprob_pool", {}),
    ("stacking", "stacking", {}),
    ("MI selection (k=2)", "mi_selection", {"k": 2}),
    ("cascade (≤1.5 members/item)", "cascade", {"max_cost": 1.5}),
    ("router (kNN)", "router", {"method": "knn"}),
    ("router (logistic)", "router", {"method": "logreg"}),
    ("bagged stacking", "bagging", {"base": "stacking"}),
    ("boosting (SAMME)", "boosting", {}),
    ("weighted vote (confidence, calibrated)", "weighted_vote", {"weights": "confidence", "calibrate": True}),
    ("cascade (≤1.5 members/item, calibrated)", "cascade", {"max_cost": 1.5, "calibrate": True}),
    ("PairRanker", "pair_ranker", {}),
]
CALLING = [
    ("GenFuser", "gen_fuser", {"fuser": FUSER}),
    ("mixture of agents (1 layer)", "mixture_of_agents", {"aggregator": FUSER, "layers": 1}),
    # Samples the member with the best dev score (k samples at temperature 0.7), not every member.
    ("self-consistency (best dev member, k=5)", "self_consistency", {"k": 5, "temperature": 0.7}),
]


@dataclass
class Answered:
    text: str
    answer: str
    tokens: int
    seconds: float
    logprob: float | None
    option_logprobs: dict[str, float] | None = None


@dataclass
class Row:
    name: str
    values: list[float]
    calls: float = 0.0
    tokens: float = 0.0
    seconds: float = 0.0
    is_blend: bool = False
    lift: stats.Interval | None = None
    lift_p: float | None = None
    best_member: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)


class DiskCache:
    """Member generations by (member fingerprint, prompt, params), kept between runs of the benchmark."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)


class CachedCaller:
    """A ModelCaller over the members' backends, caching on disk like the members' own answers."""

    def __init__(self, backends, fingerprints, cache: DiskCache, params: DecodingParams, extract) -> None:
        self.backends, self.fingerprints, self.cache, self.params, self.extract = (
            backends,
            fingerprints,
            cache,
            params,
            extract,
        )
        self.new_calls = 0

    def generate(self, member: str, prompts: list[str], sampling: Sampling | None = None) -> list[CallResult]:
        params = self.params if sampling is None else sampling.applied_to(self.params)
        pj = json.dumps(params.model_dump(mode="json"), sort_keys=True)
        keys = [DiskCache.key(self.fingerprints[member], p, pj) for p in prompts]
        missing = list(dict.fromkeys(p for p, k in zip(prompts, keys, strict=True) if k not in self.cache.data))
        if missing:
            for p, out in zip(missing, self.backends[member].generate(missing, params), strict=True):
                self.cache.data[DiskCache.key(self.fingerprints[member], p, pj)] = {
                    "text": out.text,
                    "tokens": out.prompt_tokens + out.completion_tokens,
                    "seconds": out.latency_s,
                    "logprob": out.mean_logprob,
                }
            self.new_calls += len(missing)
        results = []
        for k in keys:
            g = self.cache.data[k]
            results.append(
                CallResult(
                    text=g["text"],
                    answer=self.extract(g["text"]),
                    tokens=g["tokens"],
                    seconds=g["seconds"],
                    logprob=g["logprob"],
                )
            )
        return results


def suite_for(name: str, dev: int, test: int, mc_scoring: str = "generate") -> LibSuite:
    """The first ``dev`` and ``test`` items of a built-in suite; multiple choice scored as ``mc_scoring``."""
    full = get_builtin(name)
    items = full.split("dev")[:dev] + full.split("test")[:test]
    manifest = full.manifest
    if manifest.task_type == "multiple_choice" and mc_scoring != "generate":
        manifest = manifest.model_copy(update={"scoring": mc_scoring})
    return LibSuite(manifest, items)


def open_members() -> tuple[dict, dict[str, str], DiskCache]:
    """The members' backends, their fingerprints, and the answer cache the benchmarks share."""
    options = BackendOptions(model_roots=(MODELS,), cache_dir=CACHE)
    backends = {
        m: make_backend("gguf", {**cfg, "path": str(MODELS / cfg["path"])}, options=options)
        for m, cfg in MEMBERS.items()
    }
    fingerprints = {m: b.fingerprint() for m, b in backends.items()}
    return backends, fingerprints, DiskCache(DATA / "bench" / "strategies-cache.json")


def answer_items(suite: LibSuite, backends, fingerprints, cache: DiskCache, log) -> dict[str, list[Answered]]:
    """Every member's answer to every item, from the cache or generated (batched) and then cached."""
    m = suite.manifest
    params = DecodingParams(max_new_tokens=m.max_new_tokens, stop=tuple(m.stop))
    pj = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    out: dict[str, list[Answered]] = {}
    for member, backend in backends.items():
        if suite.by_loglikelihood:
            reqs = [suite.option_requests(item) for item in suite.items]
            keys = [DiskCache.key(fingerprints[member], "loglikelihood", json.dumps(r)) for r in reqs]
            todo = [i for i, k in enumerate(keys) if k not in cache.data]
            if todo:
                started = time.perf_counter()
                flat = [r for i in todo for r in reqs[i]]
                lls = backend.loglikelihood(flat)
                share = (time.perf_counter() - started) / len(todo)
                at = 0
                for i in todo:
                    n = len(reqs[i])
                    cache.data[keys[i]] = {"logliks": lls[at : at + n], "seconds": share}
                    at += n
                cache.save()
                log(f"  {member}: scored the options of {len(todo)} items")
            answers = []
            for item, k in zip(suite.items, keys, strict=True):
                g = cache.data[k]
                letter, _, per_option = suite.score_options(item, g["logliks"])
                vals = np.array(list(per_option.values()))
                norm = vals.max() + np.log(np.exp(vals - vals.max()).sum())
                answers.append(Answered("", letter, 0, g["seconds"], float(per_option[letter] - norm), per_option))
            out[member] = answers
            continue
        prompts = [suite.render_prompt(item) for item in suite.items]
        keys = [DiskCache.key(fingerprints[member], p, pj) for p in prompts]
        todo = [i for i, k in enumerate(keys) if k not in cache.data]
        if todo:
            started = time.perf_counter()
            gens = backend.generate([prompts[i] for i in todo], params)
            for i, g in zip(todo, gens, strict=True):
                cache.data[keys[i]] = {
                    "text": g.text,
                    "tokens": g.prompt_tokens + g.completion_tokens,
                    "seconds": g.latency_s,
                    "logprob": g.mean_logprob,
                }
            cache.save()
            log(f"  {member}: generated {len(todo)} answers in {time.perf_counter() - started:.0f} s")
        out[member] = [
            Answered(g["text"], suite.extract(g["text"]), g["tokens"], g["seconds"], g["logprob"])
            for g in (cache.data[k] for k in keys)
        ]
    return out


def member_answers(answers: dict[str, list[Answered]], index: int, prompt: str | None = None) -> list[MemberAnswer]:
    return [
        MemberAnswer(
            member=m,
            answer=a[index].answer,
            text=a[index].text,
            logprob=a[index].logprob,
            option_logprobs=a[index].option_logprobs,
            prompt=prompt,
        )
        for m, a in answers.items()
    ]


def build(name: str, params: dict):
    cls = STRATEGIES.get(name)
    if "embedder" in inspect.signature(cls.__init__).parameters:
        return cls(params, embedder=MiniLMEmbedder(MODELS / "all-MiniLM-L6-v2"))
    return cls(params)


def evaluate(suite: LibSuite, answers, caller, calling: bool, seed: int) -> list[Row]:
    dev = [i for i, it in enumerate(suite.items) if it.split == "dev"]
    test = [i for i, it in enumerate(suite.items) if it.split == "test"]
    refs = [suite.reference_answer(it) for it in suite.items]
    inputs = [it.input for it in suite.items]
    prompts = [suite.render_prompt(it) for it in suite.items]

    def score(i: int, answer: str) -> float:
        item = suite.items[i]
        if suite.by_loglikelihood or item.is_multiple_choice:
            return float(answer.strip().upper()[:1] == refs[i])
        return suite.score(item, answer)[1]

    rows = []
    for m, a in answers.items():
        rows.append(
            Row(
                m,
                [score(i, a[i].answer) for i in test],
                calls=1.0,
                tokens=float(np.mean([a[i].tokens for i in test])),
                seconds=float(np.mean([a[i].seconds for i in test])),
            )
        )
    best = max(rows, key=lambda r: np.mean(r.values))
    by_member = {
        m: {
            "tokens": [a[i].tokens for i in range(len(suite.items))],
            "seconds": [a[i].seconds for i in range(len(suite.items))],
        }
        for m, a in answers.items()
    }
    for label, name, params in BLENDS + (CALLING if calling else []):
        strategy = build(name, params)
        pool = answers
        if strategy.max_members is not None and len(answers) > strategy.max_members:
            # A one-member strategy (self-consistency) gets the member with the best dev score.
            top = max(answers, key=lambda m: np.mean([score(i, answers[m][i].answer) for i in dev]))
            pool = {top: answers[top]}
        try:
            if strategy.needs_fit:
                kwargs = {"dev_inputs": [inputs[i] for i in dev]}
                if "scorer" in inspect.signature(strategy.fit).parameters:
                    kwargs["scorer"] = lambda ans, ref: float(ans.strip() == ref.strip())
                strategy.fit([member_answers(pool, i) for i in dev], [refs[i] for i in dev], **kwargs)
            if strategy.calls_models:
                # Ask for every item's calls at once, so the sampled generations are batched.
                strategy.prefetch(
                    [member_answers(pool, i, prompts[i]) for i in test], [inputs[i] for i in test], caller=caller
                )
                caller.cache.save()
            values, calls, tokens, seconds = [], [], [], []
            for i in test:
                extra = {"caller": caller} if getattr(strategy, "calls_models", False) else {}
                decision = strategy.combine(member_answers(pool, i, prompts[i]), item_input=inputs[i], **extra)
                values.append(score(i, decision.answer))
                used = list(answers) if decision.consulted is None else decision.consulted
                own = getattr(decision, "calls", None)
                calls.append(len(used) + (own.calls if own else 0))
                tokens.append(sum(by_member[m]["tokens"][i] for m in used) + (own.tokens if own else 0))
                seconds.append(sum(by_member[m]["seconds"][i] for m in used) + (own.compute_s if own else 0.0))
        except Exception as exc:  # noqa: BLE001 - a strategy that cannot run here is reported, not fatal
            rows.append(Row(label, [], is_blend=True, note=f"{type(exc).__name__}: {exc}"[:120]))
            continue
        diff = stats.paired_bootstrap_diff(values, best.values, seed=seed)
        binary = all(v in (0.0, 1.0) for v in values + best.values)
        rows.append(
            Row(
                label,
                values,
                calls=float(np.mean(calls)),
                tokens=float(np.mean(tokens)),
                seconds=float(np.mean(seconds)),
                is_blend=True,
                lift=diff,
                lift_p=stats.mcnemar([v == 1.0 for v in values], [v == 1.0 for v in best.values]) if binary else None,
                best_member=best.name,
            )
        )
    return rows


def diversity(suite: LibSuite, answers) -> str:
    test = [i for i, it in enumerate(suite.items) if it.split == "test"]
    refs = [suite.reference_answer(it) for it in suite.items]
    correct = np.array([[a[i].answer.strip() == refs[i].strip() for i in test] for a in answers.values()])
    room = stats.headroom(correct.astype(float))
    corr = stats.error_correlation(correct)
    return (
        f"oracle {room.oracle:.3f}, best member {room.best_mean:.3f}, headroom {room.headroom:.3f}; "
        f"effective members {stats.effective_members(corr):.2f} of {len(answers)}"
    )


def fmt(x: float | None, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(suite_name: str, rows: list[Row], seed: int) -> str:
    lines = [
        f"**{suite_name}**",
        "",
        "| entry | test score [95% CI] | lift over best member [95% CI] | McNemar p | calls/item | tokens/item | CPU-s/item |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if not r.values:
            lines.append(f"| {r.name} | could not run: {r.note} | | | | | |")
            continue
        iv = stats.bootstrap_mean(r.values, seed=seed)
        lift = f"{r.lift.mean:+.3f} [{r.lift.low:+.3f}, {r.lift.high:+.3f}]" if r.lift else ""
        lines.append(
            f"| {r.name} | {iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}] | {lift} | {fmt(r.lift_p)} | "
            f"{r.calls:.2f} | {r.tokens:.0f} | {r.seconds:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suites", default="arithmetic,logic,mc_knowledge")
    parser.add_argument("--dev", type=int, default=48)
    parser.add_argument("--test", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calling", action="store_true", help="also run the fuser and mixture of agents")
    parser.add_argument(
        "--mc-scoring", default="loglikelihood_norm", choices=["generate", "loglikelihood", "loglikelihood_norm"]
    )
    args = parser.parse_args()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    backends, fingerprints, cache = open_members()
    out = [
        f"Members: {', '.join(MEMBERS)} (Q4 GGUF, CPU, greedy). Dev {args.dev} / test {args.test} items per suite; "
        f"seed {args.seed}.",
        "",
    ]
    for name in args.suites.split(","):
        suite = suite_for(name, args.dev, args.test, args.mc_scoring)
        log(f"{name}: {len(suite.items)} items")
        answers = answer_items(suite, backends, fingerprints, cache, log)
        caller = CachedCaller(
            backends,
            fingerprints,
            cache,
            DecodingParams(max_new_tokens=suite.manifest.max_new_tokens, stop=tuple(suite.manifest.stop)),
            suite.extract,
        )
        rows = evaluate(suite, answers, caller, args.calling and not suite.by_loglikelihood, args.seed)
        cache.save()
        scoring = f", scoring {suite.manifest.scoring}" if suite.manifest.task_type == "multiple_choice" else ""
        out += [
            table(f"{name} ({suite.manifest.task_type}{scoring})", rows, args.seed),
            "",
            diversity(suite, answers),
            "",
        ]
    print("\n".join(out))


if __name__ == "__main__":
    main()
