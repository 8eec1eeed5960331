from serving.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetNoteTagsRequest(_message.Message):
    __slots__ = ("note_ids", "allow_missing")
    NOTE_IDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    note_ids: _containers.RepeatedScalarFieldContainer[str]
    allow_missing: bool
    def __init__(self, note_ids: _Optional[_Iterable[str]] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class GetNoteTagsResponse(_message.Message):
    __slots__ = ("notes", "missing_note_ids")
    NOTES_FIELD_NUMBER: _ClassVar[int]
    MISSING_NOTE_IDS_FIELD_NUMBER: _ClassVar[int]
    notes: _containers.RepeatedCompositeFieldContainer[_common_pb2.NoteTags]
    missing_note_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, notes: _Optional[_Iterable[_Union[_common_pb2.NoteTags, _Mapping]]] = ..., missing_note_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class UserInterests(_message.Message):
    __slots__ = ("user_id", "tags", "history_length")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.WeightedTag]
    history_length: int
    def __init__(self, user_id: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[_common_pb2.WeightedTag, _Mapping]]] = ..., history_length: _Optional[int] = ...) -> None: ...

class GetUserInterestsRequest(_message.Message):
    __slots__ = ("user_ids", "top_k", "allow_missing")
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MISSING_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    allow_missing: bool
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., allow_missing: _Optional[bool] = ...) -> None: ...

class GetUserInterestsResponse(_message.Message):
    __slots__ = ("users", "missing_user_ids")
    USERS_FIELD_NUMBER: _ClassVar[int]
    MISSING_USER_IDS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[UserInterests]
    missing_user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, users: _Optional[_Iterable[_Union[UserInterests, _Mapping]]] = ..., missing_user_ids: _Optional[_Iterable[str]] = ...) -> None: ...
