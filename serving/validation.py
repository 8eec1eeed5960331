"""Request validation for the serving core: every bad field is a ConfigError (INVALID_ARGUMENT) naming the
field, echoing the value and saying what was expected; unknown ids are a NotFoundError (NOT_FOUND).
No grpc here (protobuf messages only).

Example::

    ids = check_ids("note_ids", req.note_ids, limits)          # list[str], or ConfigError
    notes = check_notes(req.notes, limits, {"beauty", "food"})  # list[NoteInput], or ConfigError
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from features.errors import ConfigError, NotFoundError
from ranking.recommend import Filters
from serving.api.v1 import common_pb2, recommendation_pb2
from serving.config import Limits
from tagging.types import NoteInput

__all__ = ["MAX_EPOCH_MS", "check_filters", "check_ids", "check_int", "check_notes", "missing_error"]

#: The latest ``created_at_ms`` a note may have: 9999-12-31T23:59:59.999Z (what datetime can represent).
MAX_EPOCH_MS = 253_402_300_799_999


def check_ids(
    field: str, ids: Sequence[str], limits: Limits, *, allow_empty: bool = False, unique: bool = False
) -> list[str]:
    """``ids`` as a list, or ConfigError naming ``field``: 1..max_ids_per_call non-empty short strings.

    Args:
        field: the request field, named in the message (``note_ids``).
        ids: the ids as sent.
        limits: the server's limits (``max_ids_per_call``, ``max_id_length``).
        allow_empty: accept no ids at all.
        unique: reject an id that appears twice, naming both positions.

    Raises:
        ConfigError: too many or too few ids, an empty or overlong id, or (``unique``) a repeated one.
    """
    n = len(ids)
    if n > limits.max_ids_per_call or (n == 0 and not allow_empty):
        raise ConfigError(f"{field}: got {n} ids; expected 1..{limits.max_ids_per_call} (max_ids_per_call)")
    out = list(ids)
    first: dict[str, int] = {}
    for i, value in enumerate(out):
        if not value or len(value) > limits.max_id_length:
            raise ConfigError(
                f"{field}[{i}]: got {value[:40]!r} (length {len(value)}); "
                f"expected a non-empty id of at most {limits.max_id_length} characters"
            )
        if unique:
            j = first.setdefault(value, i)
            if j != i:
                raise ConfigError(f"{field}[{i}]: {value!r} repeats {field}[{j}]; expected unique ids")
    return out


def check_int(field: str, value: int, lo: int, hi: int, limit_name: str) -> int:
    """``value`` or ConfigError naming ``field`` and the range."""
    if not lo <= value <= hi:
        raise ConfigError(f"{field}: got {value}; expected an integer in {lo}..{hi} ({limit_name})")
    return value


def missing_error(field: str, missing: Sequence[str], *, hint: bool = True) -> NotFoundError:
    """NOT_FOUND naming ``field`` and up to five of the ``missing`` ids."""
    shown = ", ".join(repr(m) for m in missing[:5])
    more = f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""
    tail = "; set allow_missing to list them instead" if hint else ""
    return NotFoundError(f"{field}: {len(missing)} unknown id(s): {shown}{more}{tail}")


def check_filters(f: recommendation_pb2.Filters, categories: Collection[str], limits: Limits) -> Filters:
    """Recommend's filters as :class:`~ranking.recommend.Filters`; ``categories``: the known ones."""
    known = set(categories)
    unknown = [c for c in f.categories if c not in known]
    if unknown:
        raise ConfigError(f"filters.categories: unknown {unknown[:5]!r}; expected some of {sorted(known)}")
    excluded = check_ids("filters.exclude_note_ids", f.exclude_note_ids, limits, allow_empty=True)
    if f.created_after_ms < 0:
        raise ConfigError(f"filters.created_after_ms: got {f.created_after_ms}; expected epoch ms >= 0")
    return Filters(
        categories=tuple(f.categories),
        exclude_note_ids=tuple(excluded),
        include_seen=f.include_seen,
        created_after_s=f.created_after_ms / 1000.0 if f.created_after_ms else None,
        cold_start_only=f.cold_start_only,
    )


def check_notes(
    notes: Sequence[common_pb2.Note], limits: Limits, categories: Collection[str]
) -> list[NoteInput]:
    """TagNotes' notes as tagger inputs: 1..max_notes_per_call, unique ids, known categories, text of at
    most ``max_text_chars`` per field, at most ``max_captions`` captions, ``created_at_ms`` in 0..MAX_EPOCH_MS.

    Raises:
        ConfigError: a bad note, naming ``notes[i].field``.
    """
    n = len(notes)
    if not 1 <= n <= limits.max_notes_per_call:
        raise ConfigError(
            f"notes: got {n} notes; expected 1..{limits.max_notes_per_call} (max_notes_per_call)"
        )
    known = set(categories)
    first: dict[str, int] = {}
    out = []
    for i, note in enumerate(notes):
        check_ids(f"notes[{i}].note_id", [note.note_id], limits)
        j = first.setdefault(note.note_id, i)
        if j != i:
            raise ConfigError(
                f"notes[{i}].note_id: {note.note_id!r} repeats notes[{j}].note_id; expected unique note ids"
            )
        if note.category not in known:
            raise ConfigError(f"notes[{i}].category: got {note.category!r}; expected one of {sorted(known)}")
        if not 0 <= note.created_at_ms <= MAX_EPOCH_MS:
            raise ConfigError(
                f"notes[{i}].created_at_ms: got {note.created_at_ms}; expected epoch ms in "
                f"0..{MAX_EPOCH_MS} (0 = now; the largest is 9999-12-31T23:59:59.999Z)"
            )
        _check_text(f"notes[{i}].title", note.title, limits)
        _check_text(f"notes[{i}].body", note.body, limits)
        captions = note.image_captions
        if len(captions) > limits.max_captions:
            raise ConfigError(
                f"notes[{i}].image_captions: got {len(captions)} captions; "
                f"expected at most {limits.max_captions} (max_captions)"
            )
        for c, caption in enumerate(captions):
            _check_text(f"notes[{i}].image_captions[{c}]", caption, limits)
        out.append(NoteInput(note.note_id, note.category, note.title, note.body, tuple(captions)))
    return out


def _check_text(field: str, text: str, limits: Limits) -> None:
    if len(text) > limits.max_text_chars:
        raise ConfigError(
            f"{field}: got {len(text)} characters ({text[:20]!r}...); "
            f"expected at most {limits.max_text_chars} (max_text_chars)"
        )
