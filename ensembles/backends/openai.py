"""Any OpenAI-compatible chat completions endpoint (vLLM, TGI, Ollama, llama.cpp, hosted APIs)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Generator, Sequence
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
    Prompt,
    TransientBackendError,
    digest_json,
    streamable,
    truncate_at_stop,
)
from ensembles.net import ERROR_BYTES, MAX_ANSWER_BYTES, OutboundRefused, guarded_client, post_json, snippet

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
# How long registration waits for an endpoint's one-token test answer.
PROBE_TIMEOUT_S = 30.0


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

    def check(self) -> None:
        try:
            self.options.outbound.check_url(self.config.base_url)
        except OutboundRefused as exc:
            raise BackendError(f"base_url {self.config.base_url} is refused: {exc}") from None

    def probe(self) -> None:
        """One chat completion of one token, through the same outbound policy as every later call.

        Asked once, without the retries a run makes, and waiting at most PROBE_TIMEOUT_S: a registration
        answers while the person waits, and an endpoint that is down now is named now.
        """
        self.check()
        c = self.config
        once = type(self)(
            {
                **c.model_dump(),
                "api_key": c.api_key.get_secret_value(),
                "max_retries": 0,
                "timeout_s": min(c.timeout_s, PROBE_TIMEOUT_S),
            },
            options=self.options,
        )
        try:
            once.generate(["Hello"], DecodingParams(max_new_tokens=1))
        except BackendError as exc:
            raise BackendError(f"the one-token test call failed: {exc}") from None

    def _post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        c = self.config
        headers = {"Content-Type": "application/json"}
        if c.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {c.api_key.get_secret_value()}"
        url = f"{c.base_url}{path}"
        for attempt in range(c.max_retries + 1):
            try:
                with self._semaphore():
                    # Checked again on every connection: the name may resolve elsewhere than at registration.
                    answer = post_json(url, payload, policy=self.options.outbound, timeout=c.timeout_s, headers=headers)
            except OutboundRefused as exc:
                raise BackendError(f"base_url {c.base_url} is refused: {exc}") from None
            except httpx.TimeoutException:
                problem: BackendError = TransientBackendError(f"{c.base_url} did not answer within {c.timeout_s:g}s")
            except httpx.TransportError as exc:
                problem = TransientBackendError(f"{c.base_url} is unreachable: {type(exc).__name__}")
            else:
                if answer.ok:
                    if answer.truncated:
                        raise BackendError(f"{c.base_url} answered with more than {MAX_ANSWER_BYTES} bytes")
                    try:
                        body = json.loads(answer.body)
                    except ValueError:
                        raise BackendError(f"{c.base_url} answered with something that is not JSON") from None
                    if not isinstance(body, dict):
                        raise BackendError(f"{c.base_url} answered with unexpected JSON")
                    return body
                # Never echo the request (it holds the key), nor more of the answer than a short, printable start.
                said = f" {answer.snippet()}" if answer.body else ""
                if answer.status not in RETRY_STATUS:
                    moved = " (redirects are not followed: give the final URL)" if 300 <= answer.status < 400 else ""
                    raise BackendError(f"{c.base_url} refused the request: HTTP {answer.status}{said}{moved}")
                problem = TransientBackendError(f"{c.base_url} answered HTTP {answer.status}{said}")
            if attempt < c.max_retries:
                # Exponential backoff with full jitter (AWS architecture blog's recommendation).
                time.sleep(random.uniform(0, min(8.0, 0.25 * 2**attempt)))  # noqa: S311
        raise problem

    def generate(self, prompts: Sequence[Prompt], params: DecodingParams) -> list[Generation]:
        out = []
        for prompt in prompts:
            payload: dict[str, Any] = {
                "model": self.config.model,
                "messages": [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt,
                "max_tokens": params.max_new_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "seed": params.seed,
                "logprobs": True,
            }
            if params.stop:
                payload["stop"] = list(params.stop)[:4]
            if params.top_logprobs:
                payload["top_logprobs"] = params.top_logprobs
            started = time.perf_counter()
            body = self._post("/chat/completions", payload)
            elapsed = time.perf_counter() - started
            out.append(_parse_completion(body, params, elapsed, self.config.base_url))
        return out

    def stream(self, prompt: Prompt, params: DecodingParams) -> Generator[str, None, Generation]:
        """Relay the endpoint's own stream; closing this generator closes the connection, which ends the
        generation on servers that watch for it (vLLM does). Not retried: the client has part of the answer."""
        c = self.config
        payload: dict[str, Any] = {
            "model": c.model,
            "messages": [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": params.seed,
            "logprobs": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            payload["stop"] = list(params.stop)[:4]
        headers = {"Content-Type": "application/json"}
        if c.api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {c.api_key.get_secret_value()}"
        started = time.perf_counter()
        text, sent, finish = "", "", "stop"
        logprobs: list[float] = []
        usage: dict[str, Any] = {}
        try:
            with (
                self._semaphore(),
                guarded_client(self.options.outbound, timeout=c.timeout_s) as client,
                client.stream("POST", f"{c.base_url}/chat/completions", json=payload, headers=headers) as response,
            ):
                if response.status_code >= 300:
                    said = snippet(response.read()[:ERROR_BYTES])
                    kind = TransientBackendError if response.status_code in RETRY_STATUS else BackendError
                    raise kind(f"{c.base_url} refused the request: HTTP {response.status_code} {said}")
                for line in response.iter_lines():
                    data = line.removeprefix("data:").strip() if line.startswith("data:") else ""
                    if not data:
                        continue
                    if data == "[DONE]":
                        break
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        raise BackendError(f"{c.base_url} streamed something that is not JSON") from None
                    if not isinstance(chunk, dict) or "error" in chunk:
                        raise BackendError(f"{c.base_url} streamed an error: {snippet(data)}")
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        text += (choice.get("delta") or {}).get("content") or ""
                        finish = "length" if choice.get("finish_reason") == "length" else finish
                        for token in (choice.get("logprobs") or {}).get("content") or []:
                            if isinstance(token, dict) and isinstance(token.get("logprob"), int | float):
                                logprobs.append(float(token["logprob"]))
                    if len(text) > MAX_ANSWER_BYTES:
                        raise BackendError(f"{c.base_url} streamed more than {MAX_ANSWER_BYTES} characters")
                    # Read on past a stop: the server was sent the stops too, and its usage comes last.
                    safe, _ = streamable(text, params.stop)
                    if len(safe) > len(sent):
                        yield safe[len(sent) :]
                        sent = safe
        except OutboundRefused as exc:
            raise BackendError(f"base_url {c.base_url} is refused: {exc}") from None
        except httpx.TimeoutException:
            raise TransientBackendError(f"{c.base_url} did not answer within {c.timeout_s:g}s") from None
        except httpx.TransportError as exc:
            raise TransientBackendError(f"{c.base_url} is unreachable: {type(exc).__name__}") from None
        text = truncate_at_stop(text, params.stop)
        if len(text) > len(sent):
            yield text[len(sent) :]
        return Generation(
            text=text,
            token_logprobs=logprobs,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or len(logprobs)),
            latency_s=time.perf_counter() - started,
            finish_reason=finish,
        )

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
    tokens: list[str] = []
    top: list[list[tuple[str, float]]] = []
    content = (choice.get("logprobs") or {}).get("content") or []
    for token in content:
        if isinstance(token, dict) and isinstance(token.get("logprob"), int | float):
            logprobs.append(float(token["logprob"]))
            tokens.append(str(token.get("token") or ""))
            alternatives = token.get("top_logprobs") or []
            top.append(
                [
                    (str(t.get("token") or ""), float(t["logprob"]))
                    for t in alternatives
                    if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)
                ]
            )
    usage = body.get("usage") or {}
    text = truncate_at_stop(text, params.stop)
    return Generation(
        text=text,
        token_logprobs=logprobs,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or len(logprobs)),
        latency_s=elapsed,
        finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        tokens=tokens,
        top_logprobs=top if params.top_logprobs else [],
    )
