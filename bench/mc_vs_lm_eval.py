"""Multiple-choice scoring: lm-evaluation-harness's own `hf` model against the arena's backend, side by side.

    .venv/bin/python bench/mc_vs_lm_eval.py --limit 40                  # both offline models, 40 items
    .venv/bin/python bench/mc_vs_lm_eval.py --limit 200 --bf16          # add a bf16 row for the arena
    .venv/bin/python bench/mc_vs_lm_eval.py --bigbench task.json ...    # BIG-bench tasks instead
    .venv/bin/python bench/mc_vs_lm_eval.py --batch-invariance --limit 64

The same items go through both: the arena's multiple-choice suite (``mc_knowledge``, or the
``--bigbench`` task files through the arena's importer) is written out as an lm-eval task (a YAML
and a JSONL of each item's rendered prompt and options), which lm-eval runs with
``lm_eval.simple_evaluate`` (CPU, fp32, batch 8), while the arena scores the suite's own
``option_requests`` with its ``gguf`` backend on the same dequantized weights. Each side runs in a
child process of its own, so its peak memory (the child's maximum resident set) is its own. The
table gives scoring wall time (model loading apart), request tokens per second (every option's
context and continuation, the tokens lm-eval feeds the model), peak memory, how many items pick the
same option (by raw log-likelihood, lm-eval's ``acc``) and the largest log-likelihood difference.

--batch-invariance scores the same items with the arena's backend at batch sizes 1, 8 and 64, with
the context pass padded left and right, and compares every run with batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ensembles.backends import BackendOptions, make_backend  # noqa: E402
from ensembles.suites import Suite, get_builtin, import_bigbench  # noqa: E402

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
}
TASK = "arena_mc"


def models_dir() -> Path:
    data = Path(os.environ.get("ARENA_DATA_DIR", ROOT / "data" / "test"))
    return data / "models"


def cache_dir() -> Path:
    return Path(os.environ.get("ARENA_CACHE_DIR", Path.home() / ".cache" / "ensemble-arena")) / "models"


def backend_for(gguf: Path, batch_size: int = 8):
    return make_backend(
        "gguf",
        {"path": str(gguf), "batch_size": batch_size},
        options=BackendOptions(cache_dir=cache_dir(), device="cpu"),
    )


def load_items(args: argparse.Namespace) -> list[tuple[str, list[str], int]]:
    """(prompt, options, gold) per item, as the arena renders them."""
    suites: list[Suite] = []
    if args.bigbench:
        for path in args.bigbench:
            suite = import_bigbench(Path(path).read_text(), file=Path(path).name)
            if suite.manifest.task_type != "multiple_choice":
                sys.exit(f"{path} is not a multiple-choice BIG-bench task")
            suites.append(suite)
    else:
        suites.append(get_builtin("mc_knowledge", size=max(args.limit, 2)))
    out = []
    for suite in suites:
        for item in suite.items[: args.limit]:
            requests = suite.option_requests(item)
            out.append((requests[0][0], [continuation[1:] for _, continuation in requests], int(item.gold or 0)))
    return out


def write_task(work: Path, items: list[tuple[str, list[str], int]]) -> None:
    """The items as an lm-eval multiple-choice task: the prompt as the context, " " + option as each continuation."""
    data = work / "items.jsonl"
    data.write_text("".join(json.dumps({"context": c, "choices": o, "gold": g}) + "\n" for c, o, g in items))
    (work / f"{TASK}.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: context\n"
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        'target_delimiter: " "\n'
        "metric_list:\n  - metric: acc\n"
    )


# ---------------------------------------------------------------- the two sides, each in its own process


def resident_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def side_lm_eval(work: Path, weights: Path, batch_size: int) -> dict:
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    started = time.perf_counter()
    lm = HFLM(pretrained=str(weights), device="cpu", dtype=torch.float32, batch_size=batch_size)
    loaded, cpu, loaded_mb = time.perf_counter(), time.process_time(), resident_mb()
    results = simple_evaluate(
        model=lm, tasks=[TASK], task_manager=TaskManager(include_path=str(work)), log_samples=True, bootstrap_iters=0
    )
    wall, cpu = time.perf_counter() - loaded, time.process_time() - cpu
    samples = sorted(results["samples"][TASK], key=lambda s: s["doc_id"])
    logliks = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    return {"load_s": loaded - started, "wall_s": wall, "cpu_s": cpu, "loaded_mb": loaded_mb, "logliks": logliks}


def side_arena(work: Path, gguf: Path, batch_size: int, dtype: str) -> dict:
    import torch

    items = [json.loads(line) for line in (work / "items.jsonl").read_text().splitlines()]
    requests = [(it["context"], " " + choice) for it in items for choice in it["choices"]]
    started = time.perf_counter()
    backend = backend_for(gguf, batch_size)
    backend.load()
    if dtype == "bf16":
        backend.model.to(torch.bfloat16)
    loaded, cpu, loaded_mb = time.perf_counter(), time.process_time(), resident_mb()
    flat = backend.loglikelihood(requests)
    wall, cpu = time.perf_counter() - loaded, time.process_time() - cpu
    tok = backend.tokenizer
    tokens = sum(len(tok(c)["input_ids"]) + len(tok(x, add_special_tokens=False)["input_ids"]) for c, x in requests)
    logliks, at = [], 0
    for it in items:
        logliks.append(flat[at : at + len(it["choices"])])
        at += len(it["choices"])
    return {
        "load_s": loaded - started,
        "wall_s": wall,
        "cpu_s": cpu,
        "loaded_mb": loaded_mb,
        "logliks": logliks,
        "tokens": tokens,
    }


def run_side(args: list[str], out: Path, profile: bool = False) -> dict:
    """Run one side in a child process; its result with the child's own peak resident memory."""
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, str(Path(__file__).resolve()), *args, "--out", str(out)]
    if profile:
        command.append("--profile")
    child = subprocess.Popen(command, env=env)  # noqa: S603 - this script, with arguments it built
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(args[:2])} failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(out.read_text())
    result["peak_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
    return result


def pick(logliks: list[float]) -> int:
    return max(range(len(logliks)), key=lambda i: logliks[i])  # the first of equals, as both sides do


def compare(theirs: list[list[float]], ours: list[list[float]]) -> tuple[int, float]:
    same = sum(pick(a) == pick(b) for a, b in zip(theirs, ours, strict=True))
    diff = max(abs(x - y) for a, b in zip(theirs, ours, strict=True) for x, y in zip(a, b, strict=True))
    return same, diff


HEADER = (
    "| model | scorer | scoring s | CPU s | request tokens/s | peak RSS MB | loaded MB | scoring's own MB "
    "| same choice | max abs loglik diff |"
)


def row(name: str, label: str, result: dict, tokens: int, agreement: str, diff: str) -> str:
    own = result["peak_mb"] - result["loaded_mb"]  # what scoring adds above the loaded model
    return (
        f"| {name} | {label} | {result['wall_s']:.1f} | {result['cpu_s']:.1f} | {tokens / result['wall_s']:,.0f} "
        f"| {result['peak_mb']:,.0f} | {result['loaded_mb']:,.0f} | {own:,.0f} | {agreement} | {diff} |"
    )


def mc_vs_lm_eval(args: argparse.Namespace, items: list[tuple[str, list[str], int]], work: Path) -> None:
    write_task(work, items)
    print(f"{len(items)} items, {sum(len(o) for _, o, _ in items)} options; batch size {args.batch_size}")
    print()
    print(HEADER)
    print("| --- | --- |" + " ---: |" * 8)
    ratios = []
    for name in args.models:
        gguf = models_dir() / MODELS[name]
        weights = backend_for(gguf).safetensors_dir()  # the arena's dequantized export: both load these weights
        common = ["--work", str(work), "--batch-size", str(args.batch_size)]
        theirs = run_side(
            ["--side", "lm-eval", "--weights", str(weights), *common], work / f"{name}-lm-eval.json", args.profile
        )
        rows = [("arena", "fp32")] + ([("arena, bf16", "bf16")] if args.bf16 else [])
        ours = {
            label: run_side(
                ["--side", "arena", "--gguf", str(gguf), "--dtype", dtype, *common],
                work / f"{name}-{dtype}.json",
                args.profile and dtype == "fp32",
            )
            for label, dtype in rows
        }
        tokens = ours["arena"]["tokens"]
        print(row(name, f"lm-eval {lm_eval_version()} hf", theirs, tokens, "–", "–"), flush=True)
        for label, result in ours.items():
            same, diff = compare(theirs["logliks"], result["logliks"])
            print(row(name, label, result, tokens, f"{same}/{len(items)}", f"{diff:.1e}"), flush=True)
            ratios.append((name, label, theirs, result))
    print()
    print("| model | scorer | speed-up, wall | speed-up, CPU time | peak memory, share of lm-eval's |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, label, theirs, result in ratios:
        print(
            f"| {name} | {label} | {theirs['wall_s'] / result['wall_s']:.2f}x "
            f"| {theirs['cpu_s'] / result['cpu_s']:.2f}x | {result['peak_mb'] / theirs['peak_mb']:.2f} |"
        )


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm_eval")


def batch_invariance(args: argparse.Namespace, items: list[tuple[str, list[str], int]]) -> None:
    requests = [(context, " " + option) for context, options, _ in items for option in options]
    print(f"{len(items)} items, {len(requests)} options; every run compared with batch 1")
    print()
    print("| model | padding | batch | same choice | max abs loglik diff |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name in args.models:
        backend = backend_for(models_dir() / MODELS[name], 1)
        backend.load()
        reference = None
        for padding in ("left", "right"):
            for size in (1, 8, 64):
                backend.config.batch_size = size
                flat = backend.loglikelihood(requests, padding=padding)
                per_item, at = [], 0
                for _, options, _ in items:
                    per_item.append(flat[at : at + len(options)])
                    at += len(options)
                reference = reference or per_item
                same, diff = compare(reference, per_item)
                print(f"| {name} | {padding} | {size} | {same}/{len(items)} | {diff:.1e} |")
        backend.unload()


def child(args: argparse.Namespace) -> None:
    def run() -> dict:
        if args.side == "lm-eval":
            return side_lm_eval(args.work, args.weights, args.batch_size)
        return side_arena(args.work, args.gguf, args.batch_size, args.dtype)

    if not args.profile:
        args.out.write_text(json.dumps(run()))
        return
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = run()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10)
    print(f"profile of {args.side} ({args.dtype if args.side == 'arena' else 'fp32'}):\n{table}", file=sys.stderr)
    args.out.write_text(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2,gemma3", help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--limit", type=int, default=40, help="items per suite")
    parser.add_argument("--bigbench", nargs="*", default=[], help="BIG-bench task.json files (multiple choice)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bf16", action="store_true", help="also the arena's backend with its weights in bf16")
    parser.add_argument(
        "--profile", action="store_true", help="torch.profiler's top operators of each fp32 side, to stderr"
    )
    parser.add_argument("--batch-invariance", action="store_true")
    # What the child processes are given.
    parser.add_argument("--side", choices=["lm-eval", "arena"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gguf", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    args.models = [m for m in args.models.split(",") if m]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        sys.exit(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    missing = [MODELS[m] for m in args.models if not (models_dir() / MODELS[m]).exists()]
    if missing:
        sys.exit(f"{', '.join(missing)} not under {models_dir()}: run `make models` (or set ARENA_DATA_DIR)")
    items = load_items(args)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, {os.cpu_count()} CPUs, load average {load}")
    if args.batch_invariance:
        batch_invariance(args, items)
        return
    with tempfile.TemporaryDirectory(prefix="mc-vs-lm-eval-") as tmp:
        work = Path(tmp)
        os.environ["HF_DATASETS_CACHE"] = str(work / "hf-datasets")
        mc_vs_lm_eval(args, items, work)
    print(f"\nload average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
