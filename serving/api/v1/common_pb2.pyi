from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tag(_message.Message):
    __slots__ = ("text", "dimension", "confidence")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    text: str
    dimension: str
    confidence: float
    def __init__(self, text: _Optional[str] = ..., dimension: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class NoteTags(_message.Message):
    __slots__ = ("note_id", "tags", "tagger", "tagger_version", "generated_at_ms", "category")
    NOTE_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TAGGER_FIELD_NUMBER: _ClassVar[int]
    TAGGER_VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    note_id: str
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    tagger: str
    tagger_version: str
    generated_at_ms: int
    category: str
    def __init__(self, note_id: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., tagger: _Optional[str] = ..., tagger_version: _Optional[str] = ..., generated_at_ms: _Optional[int] = ..., category: _Optional[str] = ...) -> None: ...

class WeightedTag(_message.Message):
    __slots__ = ("text", "dimension", "weight")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    text: str
    dimension: str
    weight: float
    def __init__(self, text: _Optional[str] = ..., dimension: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Note(_message.Message):
    __slots__ = ("note_id", "category", "title", "body", "image_captions", "author_id", "created_at_ms")
    NOTE_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CAPTIONS_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    note_id: str
    category: str
    title: str
    body: str
    image_captions: _containers.RepeatedScalarFieldContainer[str]
    author_id: str
    created_at_ms: int
    def __init__(self, note_id: _Optional[str] = ..., category: _Optional[str] = ..., title: _Optional[str] = ..., body: _Optional[str] = ..., image_captions: _Optional[_Iterable[str]] = ..., author_id: _Optional[str] = ..., created_at_ms: _Optional[int] = ...) -> None: ...

class ScoredNote(_message.Message):
    __slots__ = ("note_id", "score", "retrieval_score", "reasons", "category", "cold_start")
    NOTE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    COLD_START_FIELD_NUMBER: _ClassVar[int]
    note_id: str
    score: float
    retrieval_score: float
    reasons: _containers.RepeatedScalarFieldContainer[str]
    category: str
    cold_start: bool
    def __init__(self, note_id: _Optional[str] = ..., score: _Optional[float] = ..., retrieval_score: _Optional[float] = ..., reasons: _Optional[_Iterable[str]] = ..., category: _Optional[str] = ..., cold_start: _Optional[bool] = ...) -> None: ...
