"""Local transformers models: safetensors directories and GGUF files."""

from __future__ import annotations

import logging
import os
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

    model: Any = None
    tokenizer: Any = None

    def _load_from_dir(self, directory: Path, *, gguf_file: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch = _torch()
        device = pick_device(self.options.device)
        kwargs: dict[str, Any] = {"trust_remote_code": False}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        else:
            kwargs["use_safetensors"] = True
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(directory, dtype=pick_dtype(device), **kwargs)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise BackendError(f"could not load model from {directory}: {exc}") from exc
        model.to(device).eval()
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
            "do_sample": sampling,
            "output_scores": True,
            "return_dict_in_generate": True,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if sampling:
            gen_kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            torch.manual_seed(params.seed)
        else:
            # Greedy decoding ignores these; unset them so generation_config warnings stay quiet.
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        started = time.perf_counter()
        with torch.inference_mode():
            result = self.model.generate(**enc, **gen_kwargs)
            scores = self.model.compute_transition_scores(result.sequences, result.scores, normalize_logits=True)
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


@BACKENDS.register(
    "hf", pretty_name="Transformers (safetensors)", reference_url="https://huggingface.co/docs/transformers"
)
class HFBackend(TransformersBackend):
    """A local safetensors directory. Pickle weights and remote code are refused."""

    class Config(TransformersBackend.Config):
        path: str = Field(min_length=1, description="local directory with config.json and *.safetensors")
        revision: str = Field(default="", max_length=64)

    def _directory(self) -> Path:
        directory = check_local_path(self.config.path, self.options)
        if not directory.is_dir():
            raise BackendError(f"{self.config.path!r} is not a model directory")
        if not (directory / "config.json").exists():
            raise BackendError(f"{self.config.path!r} has no config.json")
        weights = sorted(directory.glob("*.safetensors"))
        if not weights:
            pickles = [p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES]
            if pickles:
                raise BackendError(
                    f"{self.config.path!r} holds pickle weights ({', '.join(pickles)}); "
                    "only safetensors are loaded, since pickle files can run code"
                )
            raise BackendError(f"{self.config.path!r} has no *.safetensors weights")
        return directory

    def check(self) -> None:
        self._directory()

    def fingerprint(self) -> str:
        directory = self._directory()
        hashes = {p.name: file_sha256(p) for p in sorted(directory.glob("*.safetensors"))}
        config = (directory / "config.json").read_text()
        return "hf:" + digest_json({"weights": hashes, "config": config, "template": self.config.chat_template})

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
        model.hf_quantizer = None
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
