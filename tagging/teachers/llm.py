"""The LLM teacher: any OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, SGLang, Ollama, hosted).

Per note: build the chain-of-thought messages (:mod:`tagging.teachers.prompt`), POST them, parse and
validate the JSON answer, normalize the tags. Robustness:

- bounded concurrency (one ``asyncio.Semaphore`` per event loop);
- retries with exponential backoff and full jitter on 429, 5xx, timeouts and connection errors,
  honouring ``Retry-After`` (capped);
- invalid JSON: first a follow-up message asking for valid JSON (repair), then a fresh retry;
- other 4xx answers fail the note at once (retrying a 401 only burns quota);
- a note whose retries are exhausted becomes a ``failed`` :class:`TagResult` with its reason — the
  teacher never raises for one bad note.

The API key is read from the environment variable named by ``api_key_env`` at request time; it is
never stored on the object, logged, or put into an error message (reasons are scrubbed of it).

Example::

    teacher = make_llm_teacher(handbook, base_url="http://127.0.0.1:8000/v1", model="qwen2.5-7b")
    results = teacher.tag(notes)
    print(teacher.stats.snapshot())
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import ConfigError, TagLLMError
from tagging.handbook_model import Handbook
from tagging.teachers.prompt import (
    PROMPT_VERSION,
    InvalidOutputError,
    build_messages,
    normalize,
    output_to_tags,
    parse_output,
    repair_message,
)
from tagging.types import NoteInput, TagResult

try:  # httpx2 is pinned in the lock (a huggingface_hub dependency); plain httpx has the same API
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the environment
    import httpx  # type: ignore[no-redef]

__all__ = [
    "LLMStats",
    "LLMTeacher",
    "LLMTeacherConfig",
    "LLMTeacherError",
    "make_llm_teacher",
    "make_teacher",
]

log = logging.getLogger(__name__)

_RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class LLMTeacherError(TagLLMError):
    """A configuration or setup problem of the LLM teacher (never raised for one bad note)."""

    grpc_status = "FAILED_PRECONDITION"


class LLMTeacherConfig(BaseModel):
    """Settings of the LLM teacher.

    Attributes:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (``/chat/completions`` is appended).
        model: the model name sent in each request.
        api_key_env: the environment variable holding the API key (unset: no Authorization header).
        concurrency: requests in flight at once.
        timeout_s: per-request timeout (connect + read).
        max_retries: retries per note (transport errors, retryable statuses and invalid answers share it).
        json_repairs: follow-up "please answer valid JSON" messages per attempt before a fresh retry.
        backoff_base_s / backoff_max_s: exponential backoff with full jitter.
        max_retry_after_s: a server's Retry-After is honoured up to this many seconds.
        temperature / max_tokens: generation settings.
        json_mode: send ``response_format={"type": "json_object"}`` (servers that support it).
        price_prompt_per_1k / price_completion_per_1k: cost per 1,000 tokens, for the run summary.
        cap_per_dimension: at most this many tags per dimension after normalization.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(min_length=1)
    model: str = Field(min_length=1)
    api_key_env: str = "TAGLLM_LLM_API_KEY"
    concurrency: int = Field(default=8, ge=1, le=1024)
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0, le=50)
    json_repairs: int = Field(default=1, ge=0, le=5)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    max_retry_after_s: float = Field(default=60.0, ge=0)
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_tokens: int = Field(default=1024, ge=1)
    json_mode: bool = False
    price_prompt_per_1k: float = Field(default=0.0, ge=0)
    price_completion_per_1k: float = Field(default=0.0, ge=0)
    cap_per_dimension: int = Field(default=3, ge=1)


@dataclass
class LLMStats:
    """Counters of one teacher object (all notes it tagged so far)."""

    requests: int = 0
    retries: int = 0
    http_errors: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    invalid_answers: int = 0
    repairs_ok: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    notes_ok: int = 0
    notes_failed: int = 0

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


class _Retryable(Exception):
    """One attempt failed in a way worth retrying (internal)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class _Fatal(Exception):
    """One attempt failed in a way retrying cannot fix (internal)."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


class LLMTeacher:
    """Tags notes with an OpenAI-compatible chat model guided by the handbook.

    Args:
        handbook: the User Interest Handbook (its version is part of the cache fingerprint).
        config: endpoint, concurrency, retry and pricing settings.

    Attributes:
        name: ``"llm"``.
        version: prompt version and model, e.g. ``"cot-v1:qwen2.5-7b"``.
        fingerprint: everything that changes the answer (prompt, handbook, model, temperature), for caches.
        stats: running counters (:class:`LLMStats`).
    """

    name = "llm"

    def __init__(self, handbook: Handbook, config: LLMTeacherConfig) -> None:
        self.handbook = handbook
        self.config = config
        self.version = f"{PROMPT_VERSION}:{config.model}"
        self.fingerprint = (
            f"{PROMPT_VERSION}|{handbook.version or handbook.content_hash()}|{config.model}|"
            f"t={config.temperature}|cap={config.cap_per_dimension}"
        )
        self.stats = LLMStats()
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return f"LLMTeacher(model={self.config.model!r}, base_url={self.config.base_url!r})"

    # -- public API ---------------------------------------------------------------------------

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        """Tag ``notes`` (blocking); one result per note, in order; failures are results."""

        async def run() -> list[TagResult]:
            try:
                return await self.atag(notes)
            finally:
                await self.aclose()

        return asyncio.run(run())

    async def atag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        """Tag ``notes`` concurrently (at most ``config.concurrency`` requests in flight)."""
        return list(await asyncio.gather(*(self._tag_one(n) for n in notes)))

    async def aclose(self) -> None:
        """Close the HTTP client of the current event loop (safe to call twice)."""
        if self._client is not None:
            await self._client.aclose()
        self._client, self._sem, self._loop = None, None, None

    # -- internals ----------------------------------------------------------------------------

    def _session(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._client is None or self._sem is None:
            # A client and semaphore belong to one event loop; `tag()` runs a fresh loop per call.
            limits = httpx.Limits(max_connections=self.config.concurrency)
            self._client = httpx.AsyncClient(timeout=self.config.timeout_s, limits=limits)
            self._sem = asyncio.Semaphore(self.config.concurrency)
            self._loop = loop
        return self._client, self._sem

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.config.api_key_env, "")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.config.api_key_env, "")
        return text.replace(key, "***") if key else text

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.config.backoff_max_s, self.config.backoff_base_s * (2**attempt))
        delay = random.uniform(0.0, cap)
        if retry_after is not None:
            delay = min(retry_after, self.config.max_retry_after_s) + random.uniform(0.0, cap * 0.1)
        return delay

    async def _post(self, messages: list[dict[str, Any]]) -> str:
        client, sem = self._session()
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        if self.config.json_mode:
            body["response_format"] = {"type": "json_object"}
        async with sem:
            self.stats.requests += 1
            try:
                resp = await client.post(self._url, json=body, headers=self._headers())
            except httpx.TimeoutException as exc:
                self.stats.timeouts += 1
                raise _Retryable(f"timeout after {self.config.timeout_s}s ({type(exc).__name__})") from None
            except httpx.TransportError as exc:
                self.stats.connection_errors += 1
                raise _Retryable(f"connection error ({type(exc).__name__})") from None
        if resp.status_code != 200:
            self.stats.http_errors += 1
            reason = f"HTTP {resp.status_code}: {self._scrub(resp.text[:200])}"
            if resp.status_code in _RETRYABLE_STATUS or resp.status_code >= 500:
                raise _Retryable(reason, _retry_after(resp.headers.get("retry-after")))
            if resp.status_code in (401, 403):
                reason += f" (check the API key in ${self.config.api_key_env})"
            raise _Fatal(reason)
        try:
            payload = resp.json()
            usage = payload.get("usage") or {}
            content = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise _Retryable(
                f"malformed chat completion envelope: {self._scrub(resp.text[:120])!r}"
            ) from None
        self._account(usage)
        return content if isinstance(content, str) else ""

    def _account(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        try:
            p, c = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        except (TypeError, ValueError):
            return
        self.stats.prompt_tokens += p
        self.stats.completion_tokens += c
        self.stats.cost += (
            p / 1000 * self.config.price_prompt_per_1k + c / 1000 * self.config.price_completion_per_1k
        )

    async def _tag_one(self, note: NoteInput) -> TagResult:
        base = build_messages(note, self.handbook)
        attempt, last_reason = 0, "no attempt made"
        while attempt <= self.config.max_retries:
            if attempt > 0:
                self.stats.retries += 1
            messages = list(base)
            try:
                for repair in range(self.config.json_repairs + 1):
                    content = await self._post(messages)
                    try:
                        output = parse_output(content)
                    except InvalidOutputError as exc:
                        self.stats.invalid_answers += 1
                        last_reason = f"invalid answer: {exc}"
                        messages = [*messages, {"role": "assistant", "content": content}, repair_message(exc)]
                        continue
                    if repair:
                        self.stats.repairs_ok += 1
                    return self._ok(note, output, attempt)
                await asyncio.sleep(self._backoff(attempt, None))
            except _Retryable as exc:
                last_reason = exc.reason
                log.debug("note %s attempt %d failed: %s", note.note_id, attempt, exc.reason)
                await asyncio.sleep(self._backoff(attempt, exc.retry_after))
            except _Fatal as exc:
                return self._failed(note, str(exc), attempt)
            attempt += 1
        return self._failed(
            note, f"retries exhausted ({self.config.max_retries}); last: {last_reason}", attempt
        )

    def _ok(self, note: NoteInput, output: Any, attempt: int) -> TagResult:
        tags, trace = output_to_tags(output, note, self.handbook)
        tags = normalize(tags, self.handbook, note.category, self.config.cap_per_dimension)
        self.stats.notes_ok += 1
        trace.update(prompt_version=PROMPT_VERSION, model=self.config.model, retries=attempt)
        return TagResult(note_id=note.note_id, tags=tags, status="ok", trace=trace)

    def _failed(self, note: NoteInput, reason: str, attempt: int) -> TagResult:
        self.stats.notes_failed += 1
        reason = self._scrub(reason)
        log.warning("note %s failed: %s", note.note_id, reason)
        return TagResult(
            note_id=note.note_id,
            status="failed",
            error=reason,
            trace={"retries": attempt, "model": self.config.model},
        )


def make_llm_teacher(handbook: Handbook, **options: Any) -> LLMTeacher:
    """Build the LLM teacher from keyword options (the fields of :class:`LLMTeacherConfig`).

    Raises:
        ConfigError: an unknown option or an invalid value; the message names it.
    """
    try:
        config = LLMTeacherConfig(**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(
            f"invalid LLM teacher options: {problems}; valid options: {sorted(LLMTeacherConfig.model_fields)}"
        ) from None
    return LLMTeacher(handbook, config)


make_teacher = make_llm_teacher  # the name tagging.teachers.TEACHERS points at
