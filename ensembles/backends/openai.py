"""Any OpenAI-compatible chat completions endpoint (vLLM, TGI, Ollama, llama.cpp, hosted APIs)."""

from __future__ import annotations

import random
import threading
import time
from typing import Any, ClassVar

import httpx
from pydantic import Field, SecretStr, field_validator

from ensembles.backends.base import (
    BACKENDS,
    Backend,
    BackendError,
    DecodingParams,
    Generation,
    LoglikelihoodUnsupported,
    TransientBackendError,
    digest_json,
    truncate_at_stop,
)

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


@BACKENDS.register(
    "openai",
    pretty_name="OpenAI-compatible endpoint",
    reference_url="https://platform.openai.com/docs/api-reference/chat",
)
class OpenAIBackend(Backend):
    """Chat completions over HTTP, with retries, a per-endpoint concurrency limit and logprobs."""

    class Config(Backend.Config):
        base_url: str = Field(min_length=1, description="e.g. http://127.0.0.1:8000/v1")
        model: str = Field(min_length=1, max_length=200)
        revision: str = Field(default="", max_length=64)
        api_key: SecretStr = SecretStr("")
        timeout_s: float = Field(default=60.0, gt=0, le=600)
        max_retries: int = Field(default=4, ge=0, le=10)
        max_concurrency: int = Field(default=4, ge=1, le=256)

        @field_validator("base_url")
        @classmethod
        def _http(cls, value: str) -> str:
            if not value.startswith(("http://", "https://")):
                raise ValueError("base_url must start with http:// or https://")
            return value.rstrip("/")

    config: Config

    # One semaphore per endpoint per process, so parallel batches respect the server's limit.
    _limits: ClassVar[dict[str, threading.BoundedSemaphore]] = {}
    _limits_lock: ClassVar[threading.Lock] = threading.Lock()

    def fingerprint(self) -> str:
        c = self.config
        return "openai:" + digest_json({"base_url": c.base_url, "model": c.model, "revision": c.revision})

    def _semaphore(self) -> threading.BoundedSemaphore:
        with self._limits_lock:
            key = self.config.base_url
            if key not in self._limits:
                self._limits[key] = threading.BoundedSemaphore(self.config.max_concurrency)
            return self._limits[key]

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        headers = {"Content-Type": "application/json"}
        if c.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {c.api_key.get_secret_value()}"
        url = f"{c.base_url}{path}"
        for attempt in range(c.max_retries + 1):
            try:
                with self._semaphore():
                    response = httpx.post(url, json=payload, headers=headers, timeout=c.timeout_s)
            except httpx.TimeoutException:
                problem: BackendError = TransientBackendError(f"{c.base_url} did not answer within {c.timeout_s:g}s")
            except httpx.TransportError as exc:
                problem = TransientBackendError(f"{c.base_url} is unreachable: {type(exc).__name__}")
            else:
                if response.status_code < 400:
                    try:
                        body = response.json()
                    except ValueError:
                        raise BackendError(f"{c.base_url} answered with something that is not JSON") from None
                    if not isinstance(body, dict):
                        raise BackendError(f"{c.base_url} answered with unexpected JSON")
                    return body
                if response.status_code not in RETRY_STATUS:
                    # Never echo the request (it holds the key); the server's message is enough.
                    raise BackendError(
                        f"{c.base_url} refused the request: HTTP {response.status_code} {response.text[:200]}"
                    )
                problem = TransientBackendError(f"{c.base_url} answered HTTP {response.status_code}")
            if attempt < c.max_retries:
                # Exponential backoff with full jitter (AWS architecture blog's recommendation).
                time.sleep(random.uniform(0, min(8.0, 0.25 * 2**attempt)))  # noqa: S311
        raise problem

    def generate(self, prompts: list[str], params: DecodingParams) -> list[Generation]:
        out = []
        for prompt in prompts:
            payload: dict[str, Any] = {
                "model": self.config.model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "seed": params.seed,
                "logprobs": True,
            }
            if params.stop:
                payload["stop"] = list(params.stop)[:4]
            started = time.perf_counter()
            body = self._post("/chat/completions", payload)
            elapsed = time.perf_counter() - started
            out.append(_parse_completion(body, params, elapsed, self.config.base_url))
        return out

    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[float]:
        raise LoglikelihoodUnsupported(
            "this endpoint offers no prompt log-probabilities; "
            "multiple-choice suites fall back to generation with answer extraction"
        )


def _parse_completion(body: dict[str, Any], params: DecodingParams, elapsed: float, where: str) -> Generation:
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"] or ""
        if not isinstance(text, str):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise BackendError(f"{where} answered without choices[0].message.content") from None
    logprobs: list[float] = []
    content = (choice.get("logprobs") or {}).get("content") or []
    for token in content:
        if isinstance(token, dict) and isinstance(token.get("logprob"), int | float):
            logprobs.append(float(token["logprob"]))
    usage = body.get("usage") or {}
    text = truncate_at_stop(text, params.stop)
    return Generation(
        text=text,
        token_logprobs=logprobs,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or len(logprobs)),
        latency_s=elapsed,
    )
