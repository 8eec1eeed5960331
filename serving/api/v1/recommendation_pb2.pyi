from serving.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Filters(_message.Message):
    __slots__ = ("categories", "exclude_note_ids", "include_seen", "created_after_ms", "cold_start_only")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_NOTE_IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_SEEN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    COLD_START_ONLY_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    exclude_note_ids: _containers.RepeatedScalarFieldContainer[str]
    include_seen: bool
    created_after_ms: int
    cold_start_only: bool
    def __init__(self, categories: _Optional[_Iterable[str]] = ..., exclude_note_ids: _Optional[_Iterable[str]] = ..., include_seen: _Optional[bool] = ..., created_after_ms: _Optional[int] = ..., cold_start_only: _Optional[bool] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "k", "filters", "candidates")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    filters: Filters
    candidates: int
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., candidates: _Optional[int] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("notes", "model_version")
    NOTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    notes: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredNote]
    model_version: str
    def __init__(self, notes: _Optional[_Iterable[_Union[_common_pb2.ScoredNote, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("user_id", "note_ids")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_IDS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    note_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., note_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("notes", "model_version")
    NOTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    notes: _containers.RepeatedCompositeFieldContainer[_common_pb2.ScoredNote]
    model_version: str
    def __init__(self, notes: _Optional[_Iterable[_Union[_common_pb2.ScoredNote, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...
