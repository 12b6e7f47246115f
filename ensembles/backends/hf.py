"""Local transformers models: safetensors directories and GGUF files."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ensembles.backends.base import (
    BACKENDS,
    Backend,
    BackendError,
    DecodingParams,
    Generation,
    check_local_path,
    digest_json,
    file_sha256,
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


class TransformersBackend(Backend):
    """Shared generation and scoring code for models held by transformers."""

    class Config(Backend.Config):
        chat_template: Literal["auto", "off"] = Field(
            default="auto",
            description="auto: wrap the prompt in the model's chat template when it has one",
        )
        batch_size: int = Field(default=8, ge=1, le=1024)

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

    def format_prompt(self, prompt: str) -> str:
        """The text sent to the model: the chat template when it has one, else the bare prompt."""
        self._ensure_loaded()
        tok = self.tokenizer
        if self.config.chat_template == "auto" and getattr(tok, "chat_template", None):
            text: str = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
            return text
        return prompt

    def _encode(self, texts: list[str]) -> Any:
        tok = self.tokenizer
        # A chat template already carries BOS; a bare prompt gets it from the tokenizer
        # (gemma base models need it, others add nothing).
        templated = self.config.chat_template == "auto" and getattr(tok, "chat_template", None)
        return tok(texts, return_tensors="pt", padding=True, add_special_tokens=not templated).to(self.device)

    def generate(self, prompts: list[str], params: DecodingParams) -> list[Generation]:
        self._ensure_loaded()
        torch = _torch()
        out: list[Generation] = []
        for start in range(0, len(prompts), self.config.batch_size):
            chunk = prompts[start : start + self.config.batch_size]
            out.extend(self._generate_batch(chunk, params, torch))
        return out

    def _generate_batch(self, prompts: list[str], params: DecodingParams, torch: Any) -> list[Generation]:
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
        }
        if sampling:
            from transformers import LogitsProcessorList

            gen_kwargs["logits_processor"] = LogitsProcessorList([RowSampler(params, prompts, self.device)])
        started = time.perf_counter()
        with torch.inference_mode():
            result = self.model.generate(**enc, **gen_kwargs)
            # The sampler leaves only the drawn token, scored with its log-probability already normalized.
            scores = self.model.compute_transition_scores(
                result.sequences, result.scores, normalize_logits=not sampling
            )
        elapsed = time.perf_counter() - started
        prompt_len = enc["input_ids"].shape[1]
        new_tokens = result.sequences[:, prompt_len:]
        share = elapsed / len(prompts)
        generations = []
        for row, row_scores, mask in zip(new_tokens, scores, enc["attention_mask"], strict=True):
            ids = row.tolist()
            logprobs = row_scores.float().tolist()
            text, kept = self._cut(ids, params.stop)
            generations.append(
                Generation(
                    text=text,
                    token_logprobs=[round(lp, 5) for lp in logprobs[:kept]],
                    prompt_tokens=int(mask.sum()),
                    completion_tokens=kept,
                    latency_s=share,
                )
            )
        return generations

    def _cut(self, ids: list[int], stop: tuple[str, ...]) -> tuple[str, int]:
        """Decoded text up to the first stop sequence or EOS, and how many tokens it used."""
        tok = self.tokenizer
        specials = set(tok.all_special_ids)
        kept_ids: list[int] = []
        for tid in ids:
            if tid in specials:
                break
            kept_ids.append(tid)
        full = tok.decode(kept_ids, skip_special_tokens=True)
        text = truncate_at_stop(full, stop)
        if text == full:
            return text, len(kept_ids)
        # Count the tokens needed to produce the kept text; generations are short.
        for n in range(1, len(kept_ids) + 1):
            if len(tok.decode(kept_ids[:n], skip_special_tokens=True)) >= len(text):
                return text, n
        return text, len(kept_ids)

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[float]:
        """Sum of the continuation's token log-probabilities after the context, batched.

        Rows are left-padded so every continuation ends at the last position: the model only
        computes logits for the last few positions (``logits_to_keep``), which keeps memory
        small even with a 262k-token vocabulary.
        """
        self._ensure_loaded()
        torch = _torch()
        tok = self.tokenizer
        encoded = []
        for context, continuation in requests:
            ctx_ids = tok(context, add_special_tokens=True)["input_ids"]
            cont_ids = tok(continuation, add_special_tokens=False)["input_ids"]
            encoded.append((ctx_ids, cont_ids))
        results = [0.0] * len(requests)
        order = sorted((i for i, (_, cont) in enumerate(encoded) if cont), key=lambda i: -sum(map(len, encoded[i])))
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        for start in range(0, len(order), self.config.batch_size):
            chunk = order[start : start + self.config.batch_size]
            rows = [encoded[i][0] + encoded[i][1] for i in chunk]
            width = max(map(len, rows))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            keep = max(len(encoded[i][1]) for i in chunk) + 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
                ).logits.float()
            logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # predicts the last keep-1 tokens
            for row, i in enumerate(chunk):
                cont = encoded[i][1]
                targets = torch.tensor(cont, device=self.device)
                picked = logprobs[row, -len(cont) :].gather(1, targets.unsqueeze(1))
                results[i] = float(picked.sum())
        return results


class RowSampler:
    """A logits processor that samples each row from a generator of its own, seeded by (seed, prompt).

    ``generate(do_sample=True)`` draws every row from the one global generator, so a prompt's
    sample would depend on which prompts share its batch; here it depends only on the prompt and
    the seed, and a rerun batched differently reproduces it. Temperature and nucleus (top-p)
    filtering are transformers' own warpers; the drawn token is left as the only candidate, with
    its log-probability under the warped distribution, for the greedy step to take.
    """

    def __init__(self, params: DecodingParams, prompts: list[str], device: str) -> None:
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
