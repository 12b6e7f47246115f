"""Local transformers models: safetensors directories and GGUF files."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ensembles.backends.base import (
    BACKENDS,
    Backend,
    BackendError,
    DecodingParams,
    Generation,
    Prompt,
    check_local_path,
    digest_json,
    file_sha256,
    streamable,
    transcript,
    truncate_at_stop,
)

log = logging.getLogger(__name__)

# Weight formats that execute code when loaded; a directory holding them is refused.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
COMMIT = re.compile(r"[0-9a-f]{40}")


def _torch() -> Any:
    # torch is imported lazily so that listing backends or validating configs stays cheap.
    import torch

    return torch


def pick_device(requested: str | None) -> str:
    """CUDA when present (or asked for), CPU otherwise."""
    torch = _torch()
    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str) -> Any:
    """bf16 where the device supports it fast, fp32 on CPU (CPU bf16 matmuls are slow)."""
    torch = _torch()
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@dataclass(frozen=True)
class TokenScore:
    """One token's log-probability given the tokens before it, with the most likely alternatives there."""

    token: int
    logprob: float
    top: list[tuple[int, float]]  # (token id, log-probability), most likely first; empty unless asked for


@dataclass(frozen=True)
class TokenCompletion:
    """Tokens generated after a prompt, their text, and why generation stopped ("stop" or "length")."""

    ids: list[int]
    text: str
    finish_reason: str


class TransformersBackend(Backend):
    """Shared generation and scoring code for models held by transformers."""

    class Config(Backend.Config):
        chat_template: Literal["auto", "off"] = Field(
            default="auto",
            description="auto: wrap the prompt in the model's chat template when it has one",
        )
        batch_size: int = Field(default=8, ge=1, le=1024)
        static_cache: bool = Field(
            default=False,
            description=(
                "a fixed-size KV cache, so that on CUDA transformers compiles the decode step (torch.compile "
                "with CUDA graphs); the first batch of each new shape waits for a compile, and on CPU it runs eagerly"
            ),
        )

    config: Config
    model: Any = None
    tokenizer: Any = None

    def _load_from_dir(self, directory: Path, *, gguf_file: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch = _torch()
        device = pick_device(self.options.device)
        # Local files only: a directory, a hub snapshot in the cache or a GGUF file, never a download.
        kwargs: dict[str, Any] = {"trust_remote_code": False, "local_files_only": True}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        else:
            kwargs["use_safetensors"] = True
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=pick_dtype(device), **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise BackendError(f"could not load model from {directory}: {exc}") from exc
        # functools.wraps on PreTrainedModel.to gives mypy Module.to's unbound signature, self included.
        model.to(device).eval()  # type: ignore[arg-type]
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer, self.device = model, tokenizer, device
        torch.manual_seed(0)

    def unload(self) -> None:
        self.model = None
        self.tokenizer = None

    def _ensure_loaded(self) -> None:
        if self.model is None:
            self.load()

    def format_prompt(self, prompt: Prompt) -> str:
        """The text sent to the model: the chat template when it has one, else the bare prompt (or a
        conversation's plain transcript)."""
        self._ensure_loaded()
        tok = self.tokenizer
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        if self.config.chat_template == "auto" and getattr(tok, "chat_template", None):
            text: str = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text
        return prompt if isinstance(prompt, str) else transcript(messages)

    def _encode(self, texts: list[str]) -> Any:
        tok = self.tokenizer
        # A chat template already carries BOS; a bare prompt gets it from the tokenizer
        # (gemma base models need it, others add nothing).
        templated = self.config.chat_template == "auto" and getattr(tok, "chat_template", None)
        return tok(texts, return_tensors="pt", padding=True, add_special_tokens=not templated).to(self.device)

    def generate(self, prompts: Sequence[Prompt], params: DecodingParams) -> list[Generation]:
        self._ensure_loaded()
        torch = _torch()
        out: list[Generation] = []
        for start in range(0, len(prompts), self.config.batch_size):
            chunk = prompts[start : start + self.config.batch_size]
            out.extend(self._generate_batch(chunk, params, torch))
        return out

    def _generate_batch(
        self, prompts: Sequence[Prompt], params: DecodingParams, torch: Any, **extra: Any
    ) -> list[Generation]:
        texts = [self.format_prompt(p) for p in prompts]
        enc = self._encode(texts)
        sampling = params.temperature > 0
        gen_kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            # Sampling too takes the greedy path: RowSampler draws the token and leaves only it.
            "do_sample": False,
            "output_scores": True,
            "return_dict_in_generate": True,
            "pad_token_id": self.tokenizer.pad_token_id,
            # Greedy decoding ignores these; unset them so generation_config warnings stay quiet.
            "temperature": None,
            "top_p": None,
            "top_k": None,
            **extra,
        }
        if sampling:
            from transformers import LogitsProcessorList

            gen_kwargs["logits_processor"] = LogitsProcessorList([RowSampler(params, prompts, self.device)])
        if params.top_logprobs:
            # The model's own distribution before any warping, as vLLM reports top log-probabilities.
            gen_kwargs["output_logits"] = True
        if self.config.static_cache:
            # Eager decode spends most of a step launching small kernels from Python; a cache of fixed
            # shape lets transformers compile the step into CUDA graphs (only on accelerators, not CPU).
            gen_kwargs["cache_implementation"] = "static"
        # The compiled decode runs under no_grad, the mode transformers itself compiles and tests it in;
        # inference tensors have had open issues with CUDA graphs.
        grad_mode = torch.no_grad if self.config.static_cache else torch.inference_mode
        started = time.perf_counter()
        with grad_mode():
            result = self.model.generate(**enc, **gen_kwargs)
            # The sampler leaves only the drawn token, scored with its log-probability already normalized.
            scores = self.model.compute_transition_scores(
                result.sequences, result.scores, normalize_logits=not sampling
            )
        elapsed = time.perf_counter() - started
        prompt_len = enc["input_ids"].shape[1]
        new_tokens = result.sequences[:, prompt_len:]
        share = elapsed / len(prompts)
        top = self._top_logprobs(result.logits, params.top_logprobs, torch) if params.top_logprobs else None
        generations = []
        for i, (row, row_scores, mask) in enumerate(zip(new_tokens, scores, enc["attention_mask"], strict=True)):
            ids = row.tolist()
            logprobs = row_scores.float().tolist()
            text, kept, finish = self._cut(ids, params.stop, params.max_new_tokens)
            generations.append(
                Generation(
                    text=text,
                    token_logprobs=[round(lp, 5) for lp in logprobs[:kept]],
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=kept,
                    latency_s=share,
                    finish_reason=finish,
                    tokens=[self.tokenizer.decode([t]) for t in ids[:kept]],
                    top_logprobs=top[i][:kept] if top else [],
                )
            )
        return generations

    def _top_logprobs(self, logits: Any, k: int, torch: Any) -> list[list[list[tuple[str, float]]]]:
        """Per row, per step, the k most likely tokens with their log-probabilities."""
        steps = torch.log_softmax(torch.stack(logits, dim=1).float(), dim=-1).topk(k, dim=-1)
        decode = self.tokenizer.decode
        return [
            [
                [(decode([t]), round(lp, 5)) for t, lp in zip(ids, lps, strict=True)]
                for ids, lps in zip(row_ids, row_lps, strict=True)
            ]
            for row_ids, row_lps in zip(steps.indices.tolist(), steps.values.tolist(), strict=True)
        ]

    def stream(self, prompt: Prompt, params: DecodingParams) -> Generator[str, None, Generation]:
        """Generate in a thread and yield the text as tokens arrive; closing this generator stops the generation.

        The generation is the one :meth:`generate` makes for this prompt alone (the same tokens, cut the
        same way), so a streamed answer and a cached one are the same text.
        """
        from transformers import StoppingCriteriaList

        self._ensure_loaded()
        torch = _torch()
        tokens = _TokenQueue()
        halt = threading.Event()
        done: dict[str, Any] = {}

        def run() -> None:
            try:
                criteria = StoppingCriteriaList([_StopWhenSet(halt)])
                done["out"] = self._generate_batch(
                    [prompt], params, torch, streamer=tokens, stopping_criteria=criteria
                )[0]
            except BaseException as exc:  # handed to the consumer, which raises it
                done["error"] = exc
            finally:
                tokens.end()

        thread = threading.Thread(target=run, name="arena-stream-generate", daemon=True)
        specials = set(self.tokenizer.all_special_ids)
        ids: list[int] = []
        sent = ""
        thread.start()
        try:
            for new in tokens:
                ids.extend(new)
                kept = next((i for i, t in enumerate(ids) if t in specials), len(ids))
                text, stopped = streamable(self.tokenizer.decode(ids[:kept], skip_special_tokens=True), params.stop)
                if text.startswith(sent) and len(text) > len(sent):
                    yield text[len(sent) :]
                    sent = text
                if stopped or kept < len(ids):
                    halt.set()  # the answer is decided: later tokens would be cut anyway
            thread.join()
            if "error" in done:
                raise done["error"]
            out: Generation = done["out"]
            if out.text.startswith(sent) and len(out.text) > len(sent):
                yield out.text[len(sent) :]
            elif not out.text.startswith(sent):
                log.warning("streamed text %r is not a prefix of the final text %r", sent, out.text)
            return out
        finally:
            halt.set()  # a client that left stops the generation at its next step

    def _cut(self, ids: list[int], stop: tuple[str, ...], max_new_tokens: int) -> tuple[str, int, str]:
        """Decoded text up to the first stop sequence or EOS, how many tokens it used, and why it ended
        ("length" when neither came before max_new_tokens)."""
        tok = self.tokenizer
        specials = set(tok.all_special_ids)
        kept_ids: list[int] = []
        ended = False
        for tid in ids:
            if tid in specials:
                ended = True
                break
            kept_ids.append(tid)
        full = tok.decode(kept_ids, skip_special_tokens=True)
        text = truncate_at_stop(full, stop)
        if text == full:
            finish = "stop" if ended or len(kept_ids) < max_new_tokens else "length"
            return text, len(kept_ids), finish
        # Count the tokens needed to produce the kept text; generations are short.
        for n in range(1, len(kept_ids) + 1):
            if len(tok.decode(kept_ids[:n], skip_special_tokens=True)) >= len(text):
                return text, n, "stop"
        return text, len(kept_ids), "stop"

    def loglikelihood(
        self, requests: list[tuple[str, str]], *, padding: Literal["left", "right"] = "left"
    ) -> list[float]:
        """Sum of the continuation's token log-probabilities after the context, batched.

        Requests that share a context (a multiple-choice item's options) run that context once: one
        row holds the context and then each option, masked so that an option sees only the context
        and itself (see ``_score_options``). Logits exist only at the options' positions, so a
        262k-token vocabulary costs a few rows per option, never one per context token. Contexts
        are batched longest first, ``batch_size`` of them a pass; ``padding`` pads rows on either
        side. The answers move with neither, nor with the batch size, beyond float rounding.
        """
        self._ensure_loaded()
        tok = self.tokenizer
        # An empty context is scored after the model's start token, as lm-eval does.
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        contexts: dict[str, int] = {}
        context_ids: list[list[int]] = []
        options: list[list[tuple[int, list[int]]]] = []  # per context: (request index, continuation ids)
        for index, (context, continuation) in enumerate(requests):
            if context not in contexts:
                contexts[context] = len(context_ids)
                ids = tok(context, add_special_tokens=True)["input_ids"]
                context_ids.append(ids or [start])
                options.append([])
            cont = tok(continuation, add_special_tokens=False)["input_ids"]
            if cont:  # an empty continuation has log-likelihood 0
                options[contexts[context]].append((index, cont))
        results = [0.0] * len(requests)
        order = sorted((c for c in range(len(context_ids)) if options[c]), key=lambda c: -len(context_ids[c]))
        for begin in range(0, len(order), self.config.batch_size):
            chunk = order[begin : begin + self.config.batch_size]
            sums = self._score_options(
                [context_ids[c] for c in chunk], [[cont for _, cont in options[c]] for c in chunk], padding
            )
            for c, row in zip(chunk, sums, strict=True):
                for (index, _), value in zip(options[c], row, strict=True):
                    results[index] = value
        return results

    def _score_options(
        self, contexts: list[list[int]], continuations: list[list[list[int]]], padding: str
    ) -> list[list[float]]:
        """Per context, the summed log-probability of each of its continuations, in one forward pass.

        Each row packs a context once and then every option after it (the context's last token and
        the option but its last token), at the positions each would have alone; the attention mask
        lets an option see the context and itself, never another option. One large pass keeps the
        matrix products big, where a second pass over the options would run many small ones.
        """
        torch = _torch()
        device = self.device
        config = self.model.config
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        rows: list[list[int]] = []
        positions: list[list[int]] = []
        owners: list[list[int]] = []  # per token: 0 for the context, j for the context's j-th option
        for context, conts in zip(contexts, continuations, strict=True):
            prefix = len(context) - 1
            ids, pos, own = context[:-1], list(range(prefix)), [0] * prefix
            for j, cont in enumerate(conts, start=1):
                ids = ids + [context[-1], *cont[:-1]]
                pos += range(prefix, prefix + len(cont))
                own += [j] * len(cont)
            rows.append(ids)
            positions.append(pos)
            owners.append(own)
        width = max(map(len, rows))

        def padded(row: list[int], fill: int) -> list[int]:
            fills = [fill] * (width - len(row))
            return fills + row if padding == "left" else row + fills

        ids = torch.tensor([padded(r, pad) for r in rows], device=device)
        pos = torch.tensor([padded(p, 0) for p in positions], device=device)
        own = torch.tensor([padded(o, -1) for o in owners], device=device)  # -1: padding
        real = own >= 0
        q_own, k_own = own.unsqueeze(2), own.unsqueeze(1)
        q_pos, k_pos = pos.unsqueeze(2), pos.unsqueeze(1)
        allowed = real.unsqueeze(1) & ((k_own == 0) | (k_own == q_own)) & (k_pos <= q_pos)
        allowed |= torch.eye(width, dtype=torch.bool, device=device)  # a padding query sees itself, never nothing
        window = getattr(config, "sliding_window", None)
        sliding = "sliding_attention" in (getattr(config, "layer_types", None) or [])
        masks = {"full_attention": allowed}
        if window and sliding:
            masks["sliding_attention"] = allowed & (q_pos - k_pos < window)
        elif window and getattr(config, "use_sliding_window", True):
            masks["full_attention"] = allowed & (q_pos - k_pos < window)  # one window for every layer
        if config._attn_implementation != "sdpa":  # eager attention adds the mask to the scores
            low = torch.finfo(self.model.dtype).min
            masks = {
                k: torch.zeros(m.shape, dtype=self.model.dtype, device=device).masked_fill(~m, low)
                for k, m in masks.items()
            }
        mask = {k: m.unsqueeze(1) for k, m in masks.items()}
        # Logits only from the first option token of any row to the end.
        first = min(o.index(1) + (width - len(o) if padding == "left" else 0) for o in owners)
        keep = width - first
        with torch.inference_mode():
            logits = self.model(
                input_ids=ids,
                attention_mask=mask if sliding else mask["full_attention"],
                position_ids=pos,
                use_cache=False,
                logits_to_keep=keep,
            ).logits
            rows_at: list[int] = []
            cols_at: list[int] = []
            targets: list[int] = []
            option_of: list[int] = []
            flat = 0
            for r, (o, conts) in enumerate(zip(owners, continuations, strict=True)):
                shift = (width - len(o) if padding == "left" else 0) - first
                for j, cont in enumerate(conts, start=1):
                    start = o.index(j) + shift
                    rows_at += [r] * len(cont)
                    cols_at += range(start, start + len(cont))
                    targets += cont
                    option_of += [flat] * len(cont)
                    flat += 1
            scored = logits[torch.tensor(rows_at, device=device), torch.tensor(cols_at, device=device)].float()
            index = torch.tensor(targets, device=device).unsqueeze(1)
            # log-softmax at the picked token only: its logit less the row's logsumexp.
            picked = scored.gather(1, index)[:, 0] - scored.logsumexp(-1)
            sums = torch.zeros(flat, dtype=picked.dtype, device=device)
            sums = sums.index_add(0, torch.tensor(option_of, device=device), picked).tolist()
        out: list[list[float]] = []
        at = 0
        for conts in continuations:
            out.append([float(v) for v in sums[at : at + len(conts)]])
            at += len(conts)
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of raw text as a completions prompt is read: no chat template, the tokenizer's own specials."""
        self._ensure_loaded()
        ids: list[int] = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return ids

    @property
    def vocab_size(self) -> int:
        self._ensure_loaded()
        return len(self.tokenizer)

    @property
    def context_length(self) -> int | None:
        """The most positions the model was built for (prompt and completion together); None if unknown."""
        self._ensure_loaded()
        limit = getattr(self.model.config, "max_position_embeddings", None)
        return int(limit) if limit else None

    def token_text(self, ids: list[int]) -> list[str]:
        """Each token decoded on its own, the strings OpenAI's ``logprobs.tokens`` carries."""
        self._ensure_loaded()
        return [self.tokenizer.decode([i]) for i in ids]

    def score_tokens(self, sequences: list[list[int]], starts: list[int], top_k: int = 0) -> list[list[TokenScore]]:
        """Log-probability of each token of ``sequences[i][starts[i]:]`` given the tokens before it, batched.

        The first token of a sequence has no context and is never scored. Only the asked-for positions
        get logits (``logits_to_keep``) and each is normalized by its logsumexp, so no full log-softmax
        tensor is built; ``top_k`` adds the k most likely tokens at each scored position.
        """
        self._ensure_loaded()
        torch = _torch()
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        results: list[list[TokenScore]] = [[] for _ in sequences]
        firsts = [max(start, 1) for start in starts]
        order = sorted((i for i, s in enumerate(sequences) if len(s) > firsts[i]), key=lambda i: -len(sequences[i]))
        for begin in range(0, len(order), self.config.batch_size):
            chunk = order[begin : begin + self.config.batch_size]
            rows = [sequences[i] for i in chunk]
            width = max(map(len, rows))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = max(len(sequences[i]) - firsts[i] for i in chunk) + 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
                ).logits.float()
                for row, i in enumerate(chunk):
                    targets = sequences[i][firsts[i] :]
                    scored = logits[row, -len(targets) - 1 : -1]  # position t predicts token t + 1
                    lse = scored.logsumexp(-1)
                    index = torch.tensor(targets, device=self.device).unsqueeze(1)
                    picked = (scored.gather(1, index)[:, 0] - lse).tolist()
                    tops: list[list[tuple[int, float]]] = [[] for _ in targets]
                    if top_k:
                        values, indices = scored.topk(min(top_k, scored.shape[-1]), dim=-1)
                        values = values - lse.unsqueeze(1)
                        pairs = zip(indices.tolist(), values.tolist(), strict=True)
                        tops = [list(zip(ix, vx, strict=True)) for ix, vx in pairs]
                    results[i] = [TokenScore(t, lp, top) for t, lp, top in zip(targets, picked, tops, strict=True)]
        return results

    def log_distributions(self, sequences: list[list[int]], starts: list[int]) -> list[Any]:
        """Log-probabilities over the whole vocabulary at the asked positions only, for pooling across models.

        For sequence i, a [positions, vocab] CPU tensor whose rows are the distributions of the tokens at
        ``max(starts[i], 1)`` up to the end, plus one row for the token after the last.
        """
        self._ensure_loaded()
        torch = _torch()
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        results: list[Any] = [None] * len(sequences)
        firsts = [max(start, 1) for start in starts]
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        for begin in range(0, len(order), self.config.batch_size):
            chunk = order[begin : begin + self.config.batch_size]
            rows = [sequences[i] for i in chunk]
            width = max(map(len, rows))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = max(len(sequences[i]) - min(firsts[i], len(sequences[i])) for i in chunk) + 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
                ).logits.float()
                for row, i in enumerate(chunk):
                    wanted = len(sequences[i]) - min(firsts[i], len(sequences[i])) + 1
                    results[i] = torch.log_softmax(logits[row, -wanted:], dim=-1).cpu()
        return results

    def generate_ids(self, sequences: list[list[int]], params: DecodingParams) -> list[TokenCompletion]:
        """Continue raw token sequences (no chat template): what ``/v1/completions`` generates.

        A completion that ends on the end-of-sequence token keeps that token in ``ids`` (its text has
        none), as vLLM reports it, so log-probabilities of what was generated cover every token drawn.
        """
        self._ensure_loaded()
        torch = _torch()
        tok = self.tokenizer
        specials = set(tok.all_special_ids)
        out: list[TokenCompletion] = []
        for begin in range(0, len(sequences), self.config.batch_size):
            rows = sequences[begin : begin + self.config.batch_size]
            width = max(map(len, rows))
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
            gen_kwargs: dict[str, Any] = {
                "max_new_tokens": params.max_new_tokens,
                "do_sample": False,
                "pad_token_id": pad,
                "temperature": None,
                "top_p": None,
                "top_k": None,
            }
            if params.temperature > 0:
                from transformers import LogitsProcessorList

                # Seeded by (seed, the prompt's ids): the same prompt draws the same sample in any batch.
                keys = [",".join(map(str, r)) for r in rows]
                gen_kwargs["logits_processor"] = LogitsProcessorList([RowSampler(params, keys, self.device)])
            with torch.inference_mode():
                result = self.model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
            for new in result[:, width:].tolist():
                end = next((j for j, t in enumerate(new) if t in specials), None)
                text, kept, finish = self._cut(new, params.stop, params.max_new_tokens)
                # Cut at the end-of-sequence token itself (not at a stop string before it): keep that token.
                out.append(TokenCompletion(new[: end + 1] if end == kept else new[:kept], text, finish))
        return out


class _TokenQueue:
    """A transformers streamer that hands each step's new token ids to the thread iterating over it."""

    def __init__(self) -> None:
        import queue

        self._queue: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate puts the prompt's ids first
            self._prompt_seen = True
            return
        self._queue.put([int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        self._queue.put(None)

    def __iter__(self) -> Generator[list[int], None, None]:
        while (ids := self._queue.get()) is not None:
            yield ids


class _StopWhenSet:
    """Stops generation at the next step once ``flag`` is set (the client went away, or the answer is decided)."""

    def __init__(self, flag: threading.Event) -> None:
        self.flag = flag

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        torch = _torch()
        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool, device=input_ids.device)


@dataclass(frozen=True)
class PooledScores:
    """A pool's log-probability of each given token, and its most likely next tokens."""

    scores: list[TokenScore]
    following: list[tuple[int, float]]  # (token id, log-probability), most likely first


def linear_pool(
    backends: Sequence[TransformersBackend], sequences: list[list[int]], starts: list[int], top_k: int
) -> list[PooledScores]:
    """Each token's probability averaged over models that share one vocabulary (an opinion pool).

    The mean of distributions is a distribution, so the pooled log-probabilities are normalized at
    every position; ``top_k`` alternatives are read from the pooled distribution itself.
    """
    return pool_tokens(backends, sequences, starts, top_k, "linear")


def pool_tokens(
    backends: Sequence[TransformersBackend],
    sequences: list[list[int]],
    starts: list[int],
    top_k: int,
    pool: Literal["linear", "log_linear"],
) -> list[PooledScores]:
    """Each token's log-probability pooled over models that share one vocabulary; ``top_k`` alternatives.

    linear: the log of the mean probability (normalized at every position). log_linear: the mean
    log-probability, left unnormalized, so that summed over an option's tokens it is the members' mean
    log-likelihood of the option: that orders a multiple-choice item's options as the normalized
    product of the members' option distributions does, whatever the item's other options.
    """
    torch = _torch()
    per_model = [b.log_distributions(sequences, starts) for b in backends]
    widths = {d[0].shape[-1] for d in per_model if d}
    if len(widths) > 1:
        raise BackendError(f"the models' output vocabularies differ in size ({sorted(widths)}), so they do not pool")
    out = []
    for i, seq in enumerate(sequences):
        stacked = torch.stack([d[i] for d in per_model])
        if pool == "linear":
            pooled = torch.logsumexp(stacked, dim=0) - math.log(len(backends))
        else:
            pooled = stacked.mean(dim=0)
        targets = seq[max(starts[i], 1) :]
        k = max(top_k, 1)
        values, indices = pooled.topk(min(k, pooled.shape[-1]), dim=-1)
        tops = [list(zip(ix, vx, strict=True)) for ix, vx in zip(indices.tolist(), values.tolist(), strict=True)]
        picked = pooled[torch.arange(len(targets)), torch.tensor(targets, dtype=torch.long)].tolist() if targets else []
        scores = [
            TokenScore(t, lp, top if top_k else [])
            for t, lp, top in zip(targets, picked, tops[: len(targets)], strict=True)
        ]
        out.append(PooledScores(scores, tops[-1]))
    return out


class RowSampler:
    """A logits processor that samples each row from a generator of its own, seeded by (seed, prompt).

    ``generate(do_sample=True)`` draws every row from the one global generator, so a prompt's
    sample would depend on which prompts share its batch; here it depends only on the prompt and
    the seed, and a rerun batched differently reproduces it. Temperature and nucleus (top-p)
    filtering are transformers' own warpers; the drawn token is left as the only candidate, with
    its log-probability under the warped distribution, for the greedy step to take.
    """

    def __init__(self, params: DecodingParams, prompts: Sequence[Prompt], device: str) -> None:
        from transformers import LogitsProcessor, TemperatureLogitsWarper, TopPLogitsWarper

        torch = _torch()
        self.warpers: list[LogitsProcessor] = [TemperatureLogitsWarper(params.temperature)]
        if params.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(params.top_p))
        self.generators = []
        for prompt in prompts:
            seed = int(digest_json({"seed": params.seed, "prompt": prompt})[:15], 16)
            self.generators.append(torch.Generator(device=device).manual_seed(seed))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = _torch()
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        picked = torch.cat(
            [torch.multinomial(row.exp(), 1, generator=g) for row, g in zip(logprobs, self.generators, strict=True)]
        ).unsqueeze(1)
        out = torch.full_like(logprobs, float("-inf"))
        return out.scatter_(1, picked, logprobs.gather(1, picked)).to(scores.dtype)


# Class names of the heads that generate text, beyond those AutoModelForCausalLM maps a model type to.
GENERATING_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def cannot_generate(config: Any) -> str | None:
    """Why the model a transformers config describes cannot generate text, or None when it can."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    causal = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    model_type: str = config.model_type
    heads = getattr(config, "architectures", None) or []
    architectures = [h for h in ([heads] if isinstance(heads, str) else heads) if isinstance(h, str)]
    generating = [a for a in architectures if a in causal.values() or a.endswith(GENERATING_HEADS)]
    shown = ", ".join([model_type, *architectures])
    # BERT and its kin map to a causal class too, one that needs is_decoder: their checkpoints are encoders.
    encoder = (
        model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES
        and not getattr(config, "is_encoder_decoder", False)
        and not getattr(config, "is_decoder", False)
    )
    if encoder and not generating:
        return f"is an encoder ({shown}): it embeds text and cannot generate; register a model with a causal LM head"
    if model_type not in causal:
        return f"is a {shown} model, which transformers cannot load as a text generator (AutoModelForCausalLM)"
    if architectures and not generating:
        return f"has no head that generates text ({shown}); register a model with a causal LM head"
    return None


def _short(exc: BaseException) -> str:
    """An exception's message on one line, cut to a length a page shows."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else f"{text[:300]}…"


@BACKENDS.register(
    "hf", pretty_name="Transformers (safetensors)", reference_url="https://huggingface.co/docs/transformers"
)
class HFBackend(TransformersBackend):
    """A safetensors directory, local or a hub id pinned to a commit. Pickle weights and remote code are refused."""

    class Config(TransformersBackend.Config):
        path: str = Field(default="", max_length=1000, description="local directory with config.json and *.safetensors")
        hub_id: str = Field(
            default="", max_length=200, description="org/name on the Hugging Face hub, read from the cache"
        )
        revision: str = Field(default="", max_length=64, description="hub_id: the 40-hex commit it is pinned to")

        @model_validator(mode="after")
        def _one_source(self) -> HFBackend.Config:
            if bool(self.path) == bool(self.hub_id):
                raise ValueError("give path (a local directory) or hub_id (org/name) with revision, one of the two")
            if self.hub_id:
                if not HUB_ID.fullmatch(self.hub_id):
                    raise ValueError(f"hub_id must look like org/name, not {self.hub_id!r}")
                # A branch or tag can move; only a commit names the same weights every time.
                if not COMMIT.fullmatch(self.revision):
                    raise ValueError("revision: a hub_id needs the 40-hex commit it is pinned to")
            elif self.revision:
                raise ValueError("revision goes with hub_id; a local path has none")
            return self

    config: Config

    def _label(self) -> str:
        c = self.config
        return f"{c.hub_id}@{c.revision[:12]}" if c.hub_id else repr(c.path)

    def _hub_snapshot(self) -> Path:
        from huggingface_hub import snapshot_download

        c = self.config
        try:
            # This machine has no network: only the local cache is read, never the hub.
            found = snapshot_download(
                c.hub_id, revision=c.revision, local_files_only=True, cache_dir=self.options.hub_cache
            )
        except (OSError, ValueError) as exc:
            cache = self.options.hub_cache or "the default Hugging Face cache (HF_HUB_CACHE)"
            raise BackendError(
                f"{c.hub_id} at revision {c.revision} is not in {cache}; the arena does not download, so "
                f"fetch it where there is a network (hf download {c.hub_id} --revision {c.revision}) "
                f"and copy the cache here ({type(exc).__name__})"
            ) from None
        return Path(found)

    def _directory(self) -> Path:
        label = self._label()
        directory = self._hub_snapshot() if self.config.hub_id else check_local_path(self.config.path, self.options)
        if not directory.is_dir():
            raise BackendError(f"{label} is not a model directory")
        if not (directory / "config.json").exists():
            raise BackendError(f"{label} has no config.json")
        weights = sorted(directory.glob("*.safetensors"))
        if not weights:
            pickles = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise BackendError(
                    f"{label} holds pickle weights ({', '.join(pickles)}); "
                    "only safetensors are loaded, since pickle files can run code"
                )
            raise BackendError(f"{label} has no *.safetensors weights")
        return directory

    def check(self) -> None:
        self._directory()

    def probe(self) -> None:
        """Read the config (AutoConfig) and each weights file's header: a folder that cannot generate, or
        whose files are cut short, is refused before anything loads its weights."""
        from safetensors import SafetensorError, safe_open
        from transformers import AutoConfig

        directory, label = self._directory(), self._label()
        try:
            config = AutoConfig.from_pretrained(directory, local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - a bad value raises TypeError, ZeroDivisionError, …: all say "corrupt"
            raise BackendError(f"{label}: its config.json cannot be read ({_short(exc)})") from None
        if problem := cannot_generate(config):
            raise BackendError(f"{label} {problem}")
        for weights in sorted(directory.glob("*.safetensors")):
            try:
                # The header and its offsets only: safetensors checks that they cover the file exactly.
                with safe_open(weights, framework="numpy"):
                    pass
            except (SafetensorError, OSError) as exc:
                raise BackendError(f"{label}: {weights.name} is truncated or corrupt ({_short(exc)})") from None

    def fingerprint(self) -> str:
        directory = self._directory()
        if self.config.hub_id:
            # A commit names its files for good, so the id and revision are the weights' identity.
            c = self.config
            return "hf:" + digest_json({"hub_id": c.hub_id, "revision": c.revision, "template": c.chat_template})
        hashes = {p.name: file_sha256(p) for p in sorted(directory.glob("*.safetensors"))}
        config = (directory / "config.json").read_text()
        return "hf:" + digest_json({"weights": hashes, "config": config, "template": self.config.chat_template})

    def safetensors_dir(self) -> Path:
        """The directory holding the weights (for a hub id, its snapshot in the cache)."""
        return self._directory()

    def load(self) -> None:
        self._load_from_dir(self._directory())


@BACKENDS.register(
    "gguf",
    pretty_name="GGUF (dequantized into transformers)",
    reference_url="https://huggingface.co/docs/transformers/gguf",
)
class GGUFBackend(TransformersBackend):
    """A GGUF file, dequantized once into a safetensors directory kept in the cache.

    Parsing GGUF (the tokenizer especially) takes tens of seconds on a CPU, so the first
    load exports a safetensors copy keyed by the file's hash and later loads read that.
    """

    class Config(TransformersBackend.Config):
        path: str = Field(min_length=1, description="a .gguf file")

        @model_validator(mode="after")
        def _suffix(self) -> GGUFBackend.Config:
            if not self.path.endswith(".gguf"):
                raise ValueError("path must name a .gguf file")
            return self

    config: Config
    _sha: str | None = None

    def _file(self) -> Path:
        path = check_local_path(self.config.path, self.options)
        if not path.is_file():
            raise BackendError(f"{self.config.path!r} is not a file")
        with path.open("rb") as fh:
            if fh.read(4) != b"GGUF":
                raise BackendError(f"{self.config.path!r} is not a GGUF file (bad magic bytes)")
        return path

    def check(self) -> None:
        self._file()

    def probe(self) -> None:
        """Read the GGUF header and tensor table (no tensor data): a file cut short, or one holding an
        architecture that cannot generate, is refused before the minute-long export."""
        from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

        from ensembles.backends.gguf_header import HeaderError, read_header

        path = self._file()
        name = repr(self.config.path)
        try:
            header = read_header(path)
        except (HeaderError, OSError) as exc:
            raise BackendError(f"{name} is truncated or corrupt: its header cannot be read ({exc})") from None
        if not header.tensor_count or header.tensors_end > path.stat().st_size:
            raise BackendError(f"{name} is truncated: its tensors end past the end of the file")
        arch = str(header.fields.get("general.architecture", ""))
        # llama.cpp writes a pooling type, and non-causal attention, for the embedding models it converts.
        if f"{arch}.pooling_type" in header.fields or header.fields.get(f"{arch}.attention.causal") is False:
            raise BackendError(f"{name} is an encoder ({arch}): it embeds text and cannot generate")
        if "bert" in arch or arch in ("t5", "umt5", "t5encoder"):
            raise BackendError(f"{name} is an encoder ({arch}): only decoder models generate here")
        # The architectures transformers can dequantize from GGUF (the other keys are sections of the header).
        known = sorted(set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer", "t5", "umt5"})
        if arch not in known:
            raise BackendError(
                f"{name} holds a {arch or 'nameless'} model, which transformers cannot read from GGUF "
                f"({', '.join(known)})"
            )

    def file_hash(self) -> str:
        if self._sha is None:
            self._sha = file_sha256(self._file())
        return self._sha

    def fingerprint(self) -> str:
        return "gguf:" + digest_json({"sha256": self.file_hash(), "template": self.config.chat_template})

    def export_dir(self) -> Path | None:
        if self.options.cache_dir is None:
            return None
        return self.options.cache_dir / "gguf" / self.file_hash()

    def safetensors_dir(self) -> Path:
        """The export of this file as a safetensors directory (what merges read), made once into the cache."""
        path = self._file()
        target = self.export_dir()
        if target is None:
            raise BackendError(f"{self.config.path!r}: a GGUF member needs a cache directory to be exported into")
        if not (target / "config.json").exists():
            export_gguf(path, target)
        return target

    def exported_dir(self) -> Path | None:
        """The export when it has been made already, else None."""
        target = self.export_dir()
        return target if target is not None and (target / "config.json").exists() else None

    def model_config(self) -> dict[str, Any]:
        """The transformers config, read from the GGUF header (seconds) rather than a full export (a minute)."""
        from transformers import AutoConfig

        path = self._file()
        try:
            config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise BackendError(f"could not read the config of GGUF {path.name}: {exc}") from exc
        data: dict[str, Any] = config.to_dict()
        return data

    def load(self) -> None:
        path = self._file()
        target = self.export_dir()
        if target is None:
            self._load_from_dir(path.parent, gguf_file=path.name)
            return
        if not (target / "config.json").exists():
            export_gguf(path, target)
        self._load_from_dir(target)


def export_gguf(path: Path, target: Path) -> Path:
    """Dequantize a GGUF file into a safetensors directory at ``target``, atomically.

    The export is written to a temporary sibling and renamed into place, so a crash never
    leaves a directory that looks complete.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch = _torch()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            # transformers raises ValueError for architectures its GGUF loader does not know.
            raise BackendError(f"could not load GGUF {path.name}: {exc}") from exc
        # The GGUF quantizer marks the model unserializable; the weights are plain tensors now.
        # torch types Module.__setattr__ for tensors and submodules only; any value is accepted at runtime.
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent export winning the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported %s to %s", path, target)
    return target
