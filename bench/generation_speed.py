"""Batched generation against a one-prompt-at-a-time loop, measured side by side in one run.

    .venv/bin/python bench/generation_speed.py                 # SmolLM2-135M from the data directory
    python3 bench/generation_speed.py --random-weights --prompts 1024 --batch-size 256 \
        --single-prompts 64 --check-batch-invariance                                     # on a GPU machine
    python3 bench/generation_speed.py --random-weights --prompts 1024 --batch-size 256 \
        --single-prompts 32 --static-cache                                  # eager against a compiled decode

Prints tokens per second for each way and their ratio. With --random-weights the model is
SmolLM2-135M's architecture with random weights (speed does not depend on the values), so it
runs where no model files exist, such as a bare GPU machine. On CUDA it also measures the
device's copy bandwidth, and on a CPU this machine's stream bandwidth (numpy copy and triad over
arrays far larger than the caches, best of several), and reports the share of it the decode reaches,
batched and one prompt at a time: each decode step reads every weight once. --check-batch-invariance generates the same prompts at batch sizes 1, 8
and 64 and counts the prompts whose greedy text differs. --static-cache adds the batched decode
with the backend's static_cache option (a fixed-size KV cache, which transformers compiles into
CUDA graphs on a GPU); its compile warm-up is timed apart, and its texts are compared with eager's.
--profile then runs one batched call under torch.profiler and prints the operators that took the most time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ensembles.backends import BackendOptions, DecodingParams, Generation, make_backend  # noqa: E402
from ensembles.backends.hf import HFBackend  # noqa: E402
from ensembles.suites import get_builtin  # noqa: E402

SMOLLM = ROOT / "data" / "test" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def random_smollm(path: Path) -> Path:
    """SmolLM2-135M's configuration with random weights, saved as safetensors, and a small tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if (path / "config.json").exists():
        return path
    config = LlamaConfig(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=8192,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    words = ["<unk>", "<s>", "</s>", "<pad>"] + [f"w{i}" for i in range(49148)]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def timed(backend, prompts: list[str], params: DecodingParams, batch: bool) -> tuple[float, float, list[Generation]]:
    """Wall seconds, this process's CPU seconds, and the generations."""
    sync = _sync()
    sync()
    started, cpu = time.perf_counter(), time.process_time()
    if batch:
        out = backend.generate(prompts, params)
    else:
        out = [g for p in prompts for g in backend.generate([p], params)]
    sync()
    return time.perf_counter() - started, time.process_time() - cpu, out


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process; growth after warm-up means recompiles."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _sync():
    import torch

    return torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)


def copy_bandwidth(nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """The device's memory bandwidth as a device-to-device copy moves it, bytes read plus written per second.

    Measured rather than taken from a datasheet: it is the limit a memory-bound decode can reach.
    """
    import torch

    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        dst.copy_(src)
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1000 / repeats
    del src, dst
    torch.cuda.empty_cache()
    return 2 * nbytes / seconds


def stream_bandwidth(threads: int, nbytes: int = 1 << 28, repeats: int = 5) -> dict[str, float]:
    """This CPU's memory bandwidth, bytes moved per second, as STREAM's copy and triad measure it (best of ``repeats``).

    Arrays of ``nbytes`` each, far beyond any cache. numpy releases the GIL in its loops, so ``threads``
    threads each take a slice, as the decode's torch threads do. Triad (a = b + s*c) is two numpy passes
    here, so it is counted by the bytes those passes move (five arrays' worth), not STREAM's three.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    n = nbytes // 8
    a, b, c = np.zeros(n), np.ones(n), np.full(n, 2.0)
    cuts = [slice(i * n // threads, (i + 1) * n // threads) for i in range(threads)]

    def copy(part: slice) -> None:
        np.copyto(a[part], b[part])

    def triad(part: slice) -> None:
        np.multiply(c[part], 3.0, out=a[part])
        np.add(a[part], b[part], out=a[part])

    best: dict[str, float] = {}
    with ThreadPoolExecutor(threads) as pool:
        for name, kernel, moved in (("copy", copy, 2 * nbytes), ("triad", triad, 5 * nbytes)):
            list(pool.map(kernel, cuts))  # first touch: page faults are not bandwidth
            seconds = []
            for _ in range(repeats):
                started = time.perf_counter()
                list(pool.map(kernel, cuts))
                seconds.append(time.perf_counter() - started)
            best[name] = moved / min(seconds)
    return best


def batch_invariance(
    backend: HFBackend, params: DecodingParams, prompts: list[str], sizes: tuple[int, ...] = (1, 8, 64)
) -> None:
    """Greedy texts of the same prompts at several batch sizes, compared with batch size 1's."""
    runs = {}
    for size in sizes:
        backend.config.batch_size = size
        runs[size] = backend.generate(prompts, params)
    dtype = next(backend.model.parameters()).dtype
    base = runs[sizes[0]]
    for size in sizes[1:]:
        same = [(a, b) for a, b in zip(base, runs[size], strict=True) if a.text == b.text]
        # Log-probabilities are comparable token by token only where the texts agree.
        drift = max(
            (abs(x - y) for a, b in same for x, y in zip(a.token_logprobs, b.token_logprobs, strict=True)),
            default=0.0,
        )
        print(
            f"batch invariance ({dtype}): batch {size} vs 1: {len(same)}/{len(base)} prompts with the same greedy "
            f"text; largest token log-probability difference among those {drift:.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--single-prompts", type=int, default=0, help="time one at a time on the first N prompts only (0: all)"
    )
    parser.add_argument("--check-batch-invariance", action="store_true")
    parser.add_argument(
        "--static-cache", action="store_true", help="also time batched decode with the backend's static_cache on"
    )
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--profile", action="store_true", help="then one batched call under torch.profiler: top ops")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    suite = get_builtin("arithmetic", size=max(2, 2 * args.prompts))
    prompts = [suite.render_prompt(item) for item in suite.items[: args.prompts]]
    # ignore EOS and stops: every prompt generates exactly --new-tokens, so both sides do equal work
    params = DecodingParams(max_new_tokens=args.new_tokens, stop=())
    if args.random_weights:
        directory = random_smollm(ROOT / "data" / "bench" / "smollm2-135m-random")
        backend = HFBackend({"path": str(directory), "batch_size": args.batch_size}, options=BackendOptions())
        backend.load()
        prompts = [" ".join(f"w{(i * 7 + j) % 4000}" for j in range(40)) for i in range(args.prompts)]
    else:
        if not SMOLLM.exists():
            sys.exit(f"{SMOLLM} is missing: run `make test` or `make models` first")
        cache = Path(os.environ.get("ARENA_CACHE_DIR", Path.home() / ".cache" / "ensemble-arena")) / "models"
        backend = make_backend(
            "gguf", {"path": str(SMOLLM), "batch_size": args.batch_size}, options=BackendOptions(cache_dir=cache)
        )
        backend.load()
    backend.model.generation_config.eos_token_id = None  # fixed-length generations
    backend.generate(prompts[:2], params)  # warm-up

    # A rate per token does not depend on how many prompts go one at a time, so a subset keeps that side short.
    singles = prompts[: args.single_prompts] if args.single_prompts else prompts
    batched = f"batched ({args.batch_size})"
    static = f"{batched}, static cache"
    modes = {"one prompt at a time": (False, False), batched: (True, False)}
    if args.static_cache:
        modes[static] = (True, True)
        backend.config.static_cache = True
        graphs = compiled_graphs()
        try:
            # Full batches of the measured shape: the first compiles, the second shows what a later call costs.
            warm = [timed(backend, prompts[: args.batch_size], params, True)[0] for _ in range(2)]
            built = compiled_graphs() - graphs
            print(
                f"static cache warm-up: first batch {warm[0]:.1f} s ({'with' if built else 'no'} compile), "
                f"second {warm[1]:.2f} s; {built} graphs compiled"
            )
        except Exception:  # the eager rows are still worth printing
            traceback.print_exc()
            print("static cache: failed in warm-up (above); timing eager only")
            del modes[static]
        backend.config.static_cache = False
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    texts: dict[str, list[str]] = {}
    graphs = compiled_graphs()
    for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both alike
        for name, (batch, static_cache) in list(modes.items()):
            backend.config.static_cache = static_cache
            work = prompts if batch else singles
            try:
                seconds, cpu, out = timed(backend, work, params, batch)
            except Exception:
                traceback.print_exc()
                print(f"{name}: failed (above); dropped")
                del modes[name], rows[name]
                continue
            finally:
                backend.config.static_cache = False
            # EOS is switched off, so every prompt generates exactly max_new_tokens.
            rows[name].append((len(work) * params.max_new_tokens / seconds, cpu / seconds))
            texts[name] = [g.text for g in out]
    device = backend.device
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    dtype = next(backend.model.parameters()).dtype
    print(f"device: {name}; {dtype}; torch {torch.__version__}; transformers {transformers.__version__}")
    print(
        f"{args.prompts} prompts ({len(singles)} one at a time) x {args.new_tokens} new tokens; "
        f"median of {args.repeats}"
    )
    base = statistics.median(tps for tps, _ in rows["one prompt at a time"])
    print(f"{'mode':<34}{'tokens/s':>12}{'ratio':>8}{'CPU/wall':>10}")
    for mode, values in rows.items():
        tps = statistics.median(v[0] for v in values)
        print(f"{mode:<34}{tps:>12.1f}{tps / base:>7.1f}x{statistics.median(v[1] for v in values):>10.2f}")
    if static in rows and batched in rows:
        same = sum(a == b for a, b in zip(texts[batched], texts[static], strict=True))
        print(
            f"static cache vs eager, same batches: {same}/{len(texts[batched])} prompts with the same greedy text; "
            f"{compiled_graphs() - graphs} graphs compiled while timed (0: no recompiles)"
        )
    # Tied embeddings are one parameter, counted once: each step reads them once.
    weight_bytes = sum(p.numel() * p.element_size() for p in backend.model.parameters())
    if device.startswith("cuda"):
        bandwidth, what = copy_bandwidth(), "copy bandwidth"
    else:
        threads = torch.get_num_threads()
        streams = {f"{k}, {t} thread{'s' * (t > 1)}": v for t in {1, threads} for k, v in stream_bandwidth(t).items()}
        print("stream bandwidth: " + ", ".join(f"{k} {v / 1e9:.2f} GB/s" for k, v in streams.items()))
        best = max(streams, key=streams.__getitem__)
        bandwidth, what = streams[best], f"stream bandwidth (best: {best})"
    for mode in rows:
        # End to end: a step's time includes its share of prefill, tokenizing and decoding the text.
        # A batched step makes one token for each prompt of the batch; a single prompt's step makes one.
        per_step = min(args.batch_size, args.prompts) if mode.startswith("batched") else 1
        step_s = per_step / statistics.median(v[0] for v in rows[mode])
        print(
            f"{mode}: weights {weight_bytes / 1e6:.1f} MB per decode step, {step_s * 1e3:.2f} ms per step: "
            f"{weight_bytes / step_s / 1e9:.2f} GB/s against a measured {what} of "
            f"{bandwidth / 1e9:.2f} GB/s = {weight_bytes / step_s / bandwidth:.2%} of the memory-bandwidth limit"
        )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            backend.generate(prompts[: args.batch_size], params)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    if args.check_batch_invariance:
        # Prompts of different lengths, so batches carry left padding as they do in the arena.
        varied = [" ".join(f"w{(i * 13 + j) % 4000}" for j in range(8 + (i * 5) % 33)) for i in range(64)]
        batch_invariance(backend, params, varied if args.random_weights else prompts[:64])
        if device.startswith("cuda"):
            backend.model.float()  # the same check in fp32 tells bf16 rounding from a batching bug
            batch_invariance(backend, params, varied if args.random_weights else prompts[:64])


if __name__ == "__main__":
    main()
