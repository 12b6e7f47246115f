"""Fine-tune a member on a suite's dev split: same-architecture task variants to merge with their base.

Offline there are no ready-made fine-tunes of one base to merge, so a team makes them: a few
hundred steps on a suite's dev items (full fine-tuning, or LoRA folded back into the weights) give
a variant whose directory merges with its base like any other. The prompt is the one the arena
sends (the suite's template, wrapped in the model's chat template when it has one), and the loss
is on the answer only. The directory appears whole or not at all, safetensors only.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

from ensembles.errors import EnsembleError
from ensembles.suites.model import TARGET_DELIMITER, Suite

log = logging.getLogger(__name__)

PROVENANCE_FILE = "finetune.json"  # written last: a directory without it is not a finished fine-tune
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


class FinetuneError(EnsembleError, ValueError):
    """A fine-tune cannot run as asked (no answers to learn from, no weights to start from)."""


@dataclass
class FinetuneResult:
    path: Path
    losses: list[float] = field(default_factory=list)  # the training loss at each step

    @property
    def first_loss(self) -> float:
        return self.losses[0]

    @property
    def last_loss(self) -> float:
        """Mean of the last tenth of the steps: one step's loss is noisy."""
        tail = self.losses[-max(1, len(self.losses) // 10) :]
        return sum(tail) / len(tail)


def training_pairs(suite: Suite, split: str = "dev") -> list[tuple[str, str]]:
    """(prompt as rendered for the suite, the answer to learn) for each item of ``split``.

    Multiple-choice suites scored by generation learn the gold letter; scored by log-likelihood,
    the gold option's text, which is what they compare.
    """
    if suite.manifest.task_type in ("judge", "code"):
        raise FinetuneError(f"suite {suite.name!r} is a {suite.manifest.task_type} suite: it has no answers to learn")
    pairs = []
    for item in suite.split(split):
        if item.is_multiple_choice and suite.by_loglikelihood and item.choices and item.gold is not None:
            answer = item.choices[item.gold]
        else:
            answer = suite.reference_answer(item)
        pairs.append((suite.render_prompt(item), answer))
    if not pairs:
        raise FinetuneError(f"suite {suite.name!r} has no items in its {split!r} split")
    return pairs


def finetune(
    source: Path,
    examples: list[tuple[str, str]],
    target: Path,
    *,
    steps: int = 300,
    learning_rate: float = 5e-5,
    batch_size: int = 8,
    method: Literal["full", "lora"] = "full",
    lora_rank: int = 8,
    chat_template: Literal["auto", "off"] = "auto",
    stop: str = "\n",
    seed: int = 0,
    device: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> FinetuneResult:
    """Train the model in ``source`` on (prompt, answer) ``examples`` and write it to ``target``.

    ``target`` appears only once complete: weights (safetensors), config, tokenizer and
    ``finetune.json`` (the settings, the losses, library versions and ``provenance``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if steps < 1 or batch_size < 1 or not examples:
        raise FinetuneError("a fine-tune needs examples, and at least one step of at least one example")
    if not (source / "config.json").is_file() or not any(source.glob("*.safetensors")):
        raise FinetuneError(f"{source} is not a safetensors model directory")
    if target.exists():
        raise FinetuneError(f"{target} exists already; choose another name")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    # float32 weights: AdamW on bf16 weights loses small updates; autocast gives the GPU its speed.
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, local_files_only=True, trust_remote_code=False, use_safetensors=True
    ).to(device)  # type: ignore[arg-type]  # wraps() hands mypy Module.to's unbound signature, self included
    if method == "lora":
        model = _with_lora(model, lora_rank)
    rows = [_encode(tokenizer, prompt, answer, chat_template, stop) for prompt, answer in examples]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    rng = random.Random(seed)  # noqa: S311 - reproducible batches, not secrets
    order: list[int] = []
    losses: list[float] = []
    model.train()
    for _ in range(steps):
        if len(order) < batch_size:
            order += rng.sample(range(len(rows)), len(rows))
        batch, order = [rows[i] for i in order[:batch_size]], order[batch_size:]
        ids, mask, labels = _collate(batch, pad, torch, device)
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    if method == "lora":
        model = model.merge_and_unload()  # the adapter folded in: a plain model that merges like any other
    settings = {
        "steps": steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "method": method,
        "lora_rank": lora_rank if method == "lora" else None,
        "chat_template": chat_template,
        "seed": seed,
        "examples": len(examples),
    }
    _save(model, tokenizer, target, settings, losses, source, provenance or {})
    log.info("fine-tuned %s for %d steps (loss %.3f -> %.3f) into %s", source, steps, losses[0], losses[-1], target)
    return FinetuneResult(target, losses)


def _with_lora(model: Any, rank: int) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def _encode(tokenizer: Any, prompt: str, answer: str, chat_template: str, stop: str) -> tuple[list[int], int]:
    """Token ids of prompt + answer, and how many of them are the prompt (left out of the loss).

    The prompt is encoded alone, as the arena encodes it when it asks the model, so the answer
    starts where generation would start.
    """
    templated = chat_template == "auto" and getattr(tokenizer, "chat_template", None)
    if templated:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        answer_text = answer + stop
    else:
        answer_text = TARGET_DELIMITER + answer + stop
    prompt_ids = tokenizer(prompt, add_special_tokens=not templated)["input_ids"]
    answer_ids = tokenizer(answer_text, add_special_tokens=False)["input_ids"]
    return prompt_ids + answer_ids, len(prompt_ids)


def _collate(batch: list[tuple[list[int], int]], pad: int, torch: Any, device: str) -> tuple[Any, Any, Any]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (tokens, prompt_len) in enumerate(batch):
        ids[row, : len(tokens)] = torch.tensor(tokens)
        mask[row, : len(tokens)] = 1
        labels[row, prompt_len : len(tokens)] = torch.tensor(tokens[prompt_len:])
    return ids.to(device), mask.to(device), labels.to(device)


def _save(
    model: Any,
    tokenizer: Any,
    target: Path,
    settings: dict[str, Any],
    losses: list[float],
    source: Path,
    provenance: dict[str, Any],
) -> None:
    """Write to a hidden sibling and rename it into place once ``finetune.json`` is there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.to("cpu").save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        pickles = [p.name for p in tmp.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles:
            raise FinetuneError(f"saving wrote pickle files ({', '.join(pickles)}); only safetensors are kept")
        record = {
            **settings,
            "source": str(source),
            "losses": [round(x, 5) for x in losses],
            "transformers": version("transformers"),
            "torch": version("torch"),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **provenance,
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))
        try:
            os.rename(tmp, target)
        except OSError:
            raise FinetuneError(f"{target} exists already; choose another name") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
