"""The local-model teacher: any transformers causal LM (or seq2seq) folder, same prompt as the LLM teacher.

:class:`LocalChatModel` turns OpenAI-style chat messages into text with the tokenizer's chat template
(or a plain "role: content" prompt when it has none) and generates; :class:`LocalTeacher` parses the
answer with :func:`tagging.teachers.prompt.parse_output`. Nonsense output (a random model, a model too
small to follow the schema) becomes a ``failed`` result with its reason — never an exception.
The same :class:`LocalChatModel` backs ``tagllm teacher serve`` (:mod:`tagging.teachers.openai_server`).

Images: a text-only local model cannot see ``image_url`` parts; they are replaced by a short
``[image: URL]`` marker (image captions are in the note text anyway).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.errors import ConfigError
from tagging.handbook_model import Handbook
from tagging.teachers.prompt import (
    PROMPT_VERSION,
    InvalidOutputError,
    build_messages,
    normalize,
    output_to_tags,
    parse_output,
)
from tagging.types import NoteInput, TagResult

__all__ = [
    "ChatOutput",
    "LocalChatModel",
    "LocalModelError",
    "LocalTeacher",
    "LocalTeacherConfig",
    "make_local_teacher",
    "make_teacher",
]

log = logging.getLogger(__name__)


class LocalModelError(ConfigError):
    """The model folder cannot be loaded (missing, not a transformers model, unsupported kind)."""

    grpc_status = "FAILED_PRECONDITION"


@dataclass(frozen=True)
class ChatOutput:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" | "length"
    truncated_prompt: bool = False


def flatten_content(content: Any) -> str:
    """OpenAI message content (a string or a list of parts) -> plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        elif isinstance(part, dict) and part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            parts.append(f"[image: {url[:80]}]")
    return "\n".join(parts)


def model_fingerprint(model_dir: Path) -> str:
    """A short hash of the folder's config/tokenizer files and weight sizes (changes with the checkpoint)."""
    h = hashlib.sha256()
    for p in sorted(model_dir.iterdir()):
        if p.is_file():
            h.update(p.name.encode())
            if p.suffix in (".json", ".jinja", ".txt", ".model"):
                h.update(p.read_bytes())
            else:
                h.update(str(p.stat().st_size).encode())
    return h.hexdigest()[:12]


class LocalChatModel:
    """A local transformers model behind a chat interface (thread-safe: one generation at a time).

    Args:
        model_dir: a folder loadable with ``from_pretrained`` (config, weights, tokenizer).
        device: torch device string.

    Raises:
        LocalModelError: the folder is missing or is not a loadable model/tokenizer.
    """

    def __init__(self, model_dir: str | os.PathLike[str], *, device: str = "cpu") -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise LocalModelError(
                f"model_dir {str(self.model_dir)!r} has no config.json; expected a transformers model folder"
            )
        try:
            config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            self.is_seq2seq = bool(getattr(config, "is_encoder_decoder", False))
            auto = AutoModelForSeq2SeqLM if self.is_seq2seq else AutoModelForCausalLM
            model: Any = auto.from_pretrained(self.model_dir, local_files_only=True)
            self.model = model.to(device).eval()
        except (OSError, ValueError, KeyError) as exc:
            raise LocalModelError(f"cannot load model from {str(self.model_dir)!r}: {exc}") from exc
        self.device = device
        self.fingerprint = model_fingerprint(self.model_dir)
        self.max_positions = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        )
        self._torch = torch
        self._lock = threading.Lock()

    def render(self, messages: Sequence[dict[str, Any]]) -> str:
        """Chat messages -> the prompt text (chat template when the tokenizer has one)."""
        flat = [
            {"role": str(m.get("role", "user")), "content": flatten_content(m.get("content"))}
            for m in messages
        ]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(flat, add_generation_prompt=True, tokenize=False)
            return str(text)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in flat) + "\n\nassistant:"

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> ChatOutput:
        """Generate the assistant reply to ``messages``.

        A prompt longer than the context (minus ``max_new_tokens``) keeps its last tokens.
        """
        ids = self.tokenizer(self.render(messages), return_tensors="pt", add_special_tokens=False)[
            "input_ids"
        ]
        budget = self.max_positions - max_new_tokens if not self.is_seq2seq else self.max_positions
        truncated = ids.shape[1] > budget > 0
        if truncated:
            ids = ids[:, -budget:]
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        with self._lock, self._torch.no_grad():
            self._torch.manual_seed(seed)
            ids = ids.to(self.device)
            out = self.model.generate(
                input_ids=ids,
                attention_mask=self._torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=temperature > 0,
                **({"temperature": temperature} if temperature > 0 else {}),
                pad_token_id=pad,
                eos_token_id=eos,
            )
        new = out[0] if self.is_seq2seq else out[0, ids.shape[1] :]
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        n_new = int(new.shape[0])
        ended = eos is not None and n_new > 0 and int(new[-1]) == eos
        finish = "stop" if ended or n_new < max_new_tokens else "length"
        return ChatOutput(text, int(ids.shape[1]), n_new, finish, truncated)


class LocalTeacherConfig(BaseModel):
    """Settings of the local-model teacher (``model_dir`` is required)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_dir: str = Field(min_length=1)
    device: str = "cpu"
    max_new_tokens: int = Field(default=256, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0, le=2)
    max_attempts: int = Field(default=1, ge=1, le=10)
    cap_per_dimension: int = Field(default=3, ge=1)


@dataclass
class LocalStats:
    requests: int = 0
    retries: int = 0
    invalid_answers: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    notes_ok: int = 0
    notes_failed: int = 0

    def snapshot(self) -> dict[str, Any]:
        return asdict(self)


class LocalTeacher:
    """Tags notes with a local transformers model and the handbook-guided prompt.

    With ``temperature == 0`` (greedy) a retry would repeat the same answer, so ``max_attempts`` only
    helps with sampling; each further attempt uses a new seed.
    """

    name = "local"

    def __init__(
        self, handbook: Handbook, config: LocalTeacherConfig, model: LocalChatModel | None = None
    ) -> None:
        self.handbook = handbook
        self.config = config
        self.model = model if model is not None else LocalChatModel(config.model_dir, device=config.device)
        self.version = f"{PROMPT_VERSION}:{self.model.fingerprint}"
        self.fingerprint = (
            f"{PROMPT_VERSION}|{handbook.version or handbook.content_hash()}|{self.model.fingerprint}|"
            f"t={config.temperature}|n={config.max_new_tokens}|cap={config.cap_per_dimension}"
        )
        self.stats = LocalStats()

    def __repr__(self) -> str:
        return f"LocalTeacher(model_dir={self.config.model_dir!r})"

    def tag(self, notes: Sequence[NoteInput]) -> list[TagResult]:
        """Tag ``notes`` one by one; a note whose answer cannot be used is a failed result with a reason."""
        return [self._tag_one(n) for n in notes]

    def _tag_one(self, note: NoteInput) -> TagResult:
        messages = build_messages(note, self.handbook)
        reason = "no attempt made"
        for attempt in range(self.config.max_attempts):
            if attempt:
                self.stats.retries += 1
            self.stats.requests += 1
            try:
                out = self.model.chat(
                    messages,
                    max_new_tokens=self.config.max_new_tokens,
                    temperature=self.config.temperature,
                    seed=attempt,
                )
            # One note's generation failure (odd input, memory) must not lose the rest of the run.
            except (RuntimeError, ValueError, IndexError, TypeError) as exc:
                reason = f"generation error: {type(exc).__name__}: {str(exc)[:200]}"
                log.warning("note %s: %s", note.note_id, reason)
                continue
            self.stats.prompt_tokens += out.prompt_tokens
            self.stats.completion_tokens += out.completion_tokens
            try:
                parsed = parse_output(out.text)
            except InvalidOutputError as exc:
                self.stats.invalid_answers += 1
                reason = f"invalid answer ({out.finish_reason}, {out.completion_tokens} tokens): {exc}"
                continue
            tags, trace = output_to_tags(parsed, note, self.handbook)
            tags = normalize(tags, self.handbook, note.category, self.config.cap_per_dimension)
            trace.update(
                prompt_version=PROMPT_VERSION, model=self.model.fingerprint, truncated=out.truncated_prompt
            )
            self.stats.notes_ok += 1
            return TagResult(note_id=note.note_id, tags=tags, trace=trace)
        self.stats.notes_failed += 1
        return TagResult(
            note_id=note.note_id, status="failed", error=reason, trace={"model": self.model.fingerprint}
        )


def make_local_teacher(handbook: Handbook, **options: Any) -> LocalTeacher:
    """Build the local-model teacher from keyword options (the fields of :class:`LocalTeacherConfig`).

    Raises:
        ConfigError: unknown/invalid options (the message names them) or an unloadable model folder.
    """
    try:
        config = LocalTeacherConfig(**options)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigError(
            f"invalid local teacher options: {problems}; valid options: {sorted(LocalTeacherConfig.model_fields)}"
        ) from None
    return LocalTeacher(handbook, config)


make_teacher = make_local_teacher  # the name tagging.teachers.TEACHERS points at
