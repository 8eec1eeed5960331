"""Teachers: every backend that produces training tags, behind the :class:`~tagging.types.Tagger` protocol.

The backend is chosen by name (config); its module is imported only when it is made, so the offline
default never imports an HTTP client or torch. A factory is called as ``factory(handbook, **options)``.

=========== ====================================== =====================================================
name        factory                                what it is
=========== ====================================== =====================================================
offline     tagging.teachers.offline:OfflineTeacher handbook matching over title, body, image captions
reference   tagging.teachers.reference:ReferenceTeacher  a dataset's creator tags cleaned via the handbook
llm         tagging.teachers.llm:make_teacher      OpenAI-compatible multimodal chat endpoint
local       tagging.teachers.local:make_teacher    a local transformers model
=========== ====================================== =====================================================
"""

from __future__ import annotations

import importlib
from typing import Any

from features.errors import ConfigError
from tagging.handbook_model import Handbook
from tagging.types import Tagger

__all__ = ["DEFAULT_TEACHER", "TEACHERS", "make_teacher"]

DEFAULT_TEACHER = "offline"

TEACHERS: dict[str, str] = {
    "offline": "tagging.teachers.offline:OfflineTeacher",
    "reference": "tagging.teachers.reference:ReferenceTeacher",
    "llm": "tagging.teachers.llm:make_teacher",
    "local": "tagging.teachers.local:make_teacher",
}


def make_teacher(kind: str, handbook: Handbook, **options: Any) -> Tagger:
    """Make the teacher registered as ``kind``.

    Args:
        kind: one of :data:`TEACHERS`.
        handbook: the handbook that guides it.
        **options: backend options (e.g. ``reference_tags`` for ``reference``, endpoint settings for
            ``llm``).

    Raises:
        ConfigError: unknown ``kind`` (the message lists the choices), or the backend module lacks
            its factory.
    """
    if kind not in TEACHERS:
        raise ConfigError(f"teacher {kind!r} is not known; expected one of: {', '.join(TEACHERS)}")
    module_name, attr = TEACHERS[kind].split(":")
    module = importlib.import_module(module_name)
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigError(f"teacher {kind!r}: {module_name} has no factory {attr!r}")
    teacher: Tagger = factory(handbook, **options)
    return teacher
