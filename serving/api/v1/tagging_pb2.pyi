from serving.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TagNotesRequest(_message.Message):
    __slots__ = ("notes",)
    NOTES_FIELD_NUMBER: _ClassVar[int]
    notes: _containers.RepeatedCompositeFieldContainer[_common_pb2.Note]
    def __init__(self, notes: _Optional[_Iterable[_Union[_common_pb2.Note, _Mapping]]] = ...) -> None: ...

class TagNotesResponse(_message.Message):
    __slots__ = ("notes", "index_size", "unchanged_note_ids")
    NOTES_FIELD_NUMBER: _ClassVar[int]
    INDEX_SIZE_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_NOTE_IDS_FIELD_NUMBER: _ClassVar[int]
    notes: _containers.RepeatedCompositeFieldContainer[_common_pb2.NoteTags]
    index_size: int
    unchanged_note_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, notes: _Optional[_Iterable[_Union[_common_pb2.NoteTags, _Mapping]]] = ..., index_size: _Optional[int] = ..., unchanged_note_ids: _Optional[_Iterable[str]] = ...) -> None: ...
