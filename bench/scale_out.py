"""A run's generation batches over two Celery workers against one, side by side in one run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/arena REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/scale_out.py [--items 48] [--entries 2] [--rounds 2]

The arena's own run pipeline, as the tests drive it (tests/helpers.py WorkerProcess): a test database
created and dropped for the run, real `celery worker` processes on both queues (concurrency 1, one
torch thread each) against it and Redis, and runs created with `create_run`, which plan, generate
their batches, score and finish on the workers. The models are small random llamas (one per entry,
built here), so the figure is what the pipeline costs per item, not the model. Every run gets a
suite seed of its own, so the generations cache answers nothing. One worker and two take turns over
--rounds (the second worker stopped and started between them), so a drifting load weighs on both.

Prints, per mode, seconds per item (create_run to finished, over every entry's items), the workers'
CPU time per item, and which worker took how many batches: planning splits the items into batches
(ARENA_BATCH_SIZE) and a worker claims a whole batch with one conditional update (WorkItem).
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

import django  # noqa: E402 - the settings module must be chosen first

django.setup()

import psutil  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from arena.benchmarks.services import import_suite  # noqa: E402
from arena.evaluations.models import RunEntry, State, WorkItem  # noqa: E402
from arena.evaluations.services import create_run  # noqa: E402
from arena.registry.services import register_model  # noqa: E402
from arena.teams.models import Team  # noqa: E402
from ensembles.suites import get_builtin  # noqa: E402
from tests.helpers import WorkerProcess, finished, wait_for  # noqa: E402

DONE_TASK = re.compile(r"Task arena\.evaluations\.tasks\.generate_batch\[[^\]]+\] succeeded")


def small_llama(path: Path, seed: int) -> Path:
    """A small random llama (two layers, width 64) with a word-level tokenizer over the arithmetic suite's words."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", "<pad>", "Question:", "Answer:", "What", "is", "+", "-", "?", "\n"]
    words += [str(i) for i in range(1000)]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path


def cpu_seconds(workers: list[WorkerProcess]) -> float:
    """User plus system CPU seconds of the workers' processes (the main process and its pool children)."""
    total = 0.0
    for worker in workers:
        main = psutil.Process(worker.proc.pid)
        for proc in [main, *main.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def batches_done(worker: WorkerProcess) -> int:
    return len(DONE_TASK.findall(worker.log_path.read_text(errors="replace")))


def start_and_wait(worker: WorkerProcess) -> None:
    """Start the worker and return once it consumes: a run sent before would all go to the workers already up."""
    ready = worker.log_path.read_text(errors="replace").count(" ready.") if worker.log_path.exists() else 0
    worker.start()
    wait_for(lambda: worker.log_path.read_text(errors="replace").count(" ready.") > ready, what="the worker to start")


def one_run(team: Team, entries: list, items: int, seed: int, workers: list[WorkerProcess]) -> dict:
    suite = import_suite(team, get_builtin("arithmetic", seed=seed, size=2 * items))  # half are the test split
    before = [batches_done(w) for w in workers]
    cpu = cpu_seconds(workers)
    started = time.perf_counter()
    run = create_run(team, suite, entries)
    run = wait_for(lambda: finished(run.pk), timeout=600, interval=0.1, what=f"run {run.pk} to finish")
    wall = time.perf_counter() - started
    cpu = cpu_seconds(workers) - cpu
    if run.state != State.DONE:
        sys.exit(f"run {run.pk} ended {run.state}: {run.error}")
    scored = sum(RunEntry.objects.filter(run=run).values_list("n", flat=True))
    sizes = [len(ids) for ids in WorkItem.objects.filter(run=run).values_list("item_ids", flat=True)]
    # A batch's "succeeded" line is logged just after the commit that can finish the run.
    wait_for(lambda: sum(map(batches_done, workers)) - sum(before) >= len(sizes), what="the workers' logs")
    return {
        "wall": wall,
        "cpu": cpu,
        "items": scored,
        "batches": len(sizes),
        "batch_sizes": sorted(set(sizes)),
        "per_worker": [batches_done(w) - b for w, b in zip(workers, before, strict=True)],
    }


def profiled_worker(root: Path, env: dict[str, str], out: Path, log: Path) -> WorkerProcess:
    """A worker with the solo pool (tasks run in the process itself) under cProfile, writing to ``out``.

    cProfile writes its file when the worker exits through SystemExit, which SIGTERM (a warm shutdown) gives.
    """
    worker = WorkerProcess([root], env, log_path=log)
    argv = [sys.executable, "-m", "cProfile", "-o", str(out), "-m", "celery", "-A", "arena", "worker"]
    argv += ["-Q", "gpu,cpu", "--pool", "solo", "--loglevel", "INFO", "-n", f"profile-{os.getpid()}@%h"]
    argv += ["--without-gossip", "--without-mingle"]
    with open(log, "ab") as handle:
        # Our own argv, no shell.
        worker.proc = subprocess.Popen(  # noqa: S603
            argv, cwd=REPO, env=worker.env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
    return worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=48, help="test items per run (each entry answers all)")
    parser.add_argument("--entries", type=int, default=2, help="models in each run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="then one run on a cProfiled solo worker: its top list")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("two workers share the database: set DATABASE_URL to PostgreSQL")

    workdir = Path(tempfile.mkdtemp(prefix="arena-scale-out-"))
    root = workdir / "models"
    paths = [small_llama(root / f"small-{i}", seed=i) for i in range(args.entries)]
    settings.ARENA_MODEL_ROOTS = [root]
    redis.Redis.from_url(settings.REDIS_URL).flushdb()  # no task left over from an earlier run
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    env = {"ARENA_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}
    workers = [WorkerProcess([root], env, log_path=workdir / f"worker-{i}.log") for i in range(2)]
    rows: dict[str, list[dict]] = {"one worker": [], "two workers": []}
    try:
        team = Team.objects.create(name="Bench", slug="bench")
        entries = [register_model(team, name=p.name, kind="hf", config={"path": str(p)}) for p in paths]
        start_and_wait(workers[0])
        start_and_wait(workers[1])
        seed = 1000
        one_run(team, entries, 16, seed, workers)  # warm-up: workers start and load the models
        for turn in range(args.rounds):
            for mode in ("one worker", "two workers") if turn % 2 == 0 else ("two workers", "one worker"):
                if mode == "one worker" and workers[1].proc.poll() is None:
                    workers[1].stop()
                elif mode == "two workers" and workers[1].proc.poll() is not None:
                    start_and_wait(workers[1])
                    one_run(team, entries, 8, seed := seed + 1, workers)  # the restarted worker loads its models
                active = workers if mode == "two workers" else workers[:1]
                row = one_run(team, entries, args.items, seed := seed + 1, active)
                rows[mode].append(row)
                print(f"  round {turn + 1}, {mode}: {row}", file=sys.stderr)
        if args.profile:
            for worker in workers:
                worker.stop()
            profiled = profiled_worker(root, env, workdir / "worker.prof", workdir / "profiled.log")
            workers.append(profiled)
            one_run(team, entries, 8, seed := seed + 1, [profiled])  # start-up and loading, before what is read
            row = one_run(team, entries, args.items, seed := seed + 1, [profiled])
            print(f"  profiled solo worker: {row}", file=sys.stderr)
            profiled.stop()
    finally:
        for worker in workers:
            worker.stop()
        connection.creation.destroy_test_db(old_name, verbosity=0)
        redis.Redis.from_url(settings.REDIS_URL).flushdb()

    print(
        f"\n{args.items} test items x {args.entries} entries per run, ARENA_BATCH_SIZE={settings.ARENA_BATCH_SIZE}, "
        f"{args.rounds} rounds, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print(
        "| workers | runs | items per run | ms per item | worker CPU ms per item | batches per run (items each) "
        "| batches taken per worker | ratio, per item |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |")
    base = sum(r["wall"] for r in rows["one worker"]) / sum(r["items"] for r in rows["one worker"])
    for mode, runs in rows.items():
        items = sum(r["items"] for r in runs)
        per_item = sum(r["wall"] for r in runs) / items
        cpu = sum(r["cpu"] for r in runs) / items
        taken = " / ".join(str(sum(r["per_worker"][i] for r in runs)) for i in range(len(runs[0]["per_worker"])))
        sizes = ", ".join(str(s) for s in sorted({s for r in runs for s in r["batch_sizes"]}))
        print(
            f"| {mode} | {len(runs)} | {items // len(runs)} | {per_item * 1e3:.1f} | {cpu * 1e3:.1f} | "
            f"{statistics.median(r['batches'] for r in runs):.0f} ({sizes}) | {taken} | {base / per_item:.2f}x |"
        )
    if args.profile:
        print(f"\nprofile of the solo worker (whole life: start-up, {args.entries} model loads, two runs):")
        stats = pstats.Stats(str(workdir / "worker.prof"))
        stats.sort_stats("cumtime").print_stats(r"arena/evaluations/(pipeline|cache|tasks)|kombu/transport", 12)
        stats.sort_stats("tottime").print_stats(10)
    print(
        "\nratio: one worker's seconds per item over this mode's (above 1: faster per item). "
        "Batches taken: generate_batch tasks each worker finished (one WorkItem claim each)."
    )


if __name__ == "__main__":
    main()
