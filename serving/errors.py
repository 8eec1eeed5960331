"""The serving errors: :class:`features.errors.TagLLMError` subclasses that know their gRPC status code
(mapped once, by :mod:`serving.interceptor`). Bad input is :class:`~features.errors.ConfigError`
(INVALID_ARGUMENT) and unknown ids :class:`~features.errors.NotFoundError` (NOT_FOUND)."""

from __future__ import annotations

from features.errors import TagLLMError

__all__ = [
    "DeadlineError",
    "FailedPreconditionError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
]


class UnauthenticatedError(TagLLMError):
    """Missing or wrong bearer token."""

    grpc_status = "UNAUTHENTICATED"


class PermissionDeniedError(TagLLMError):
    """The caller is known but may not do this (a write without the write token; writes disabled)."""

    grpc_status = "PERMISSION_DENIED"


class ResourceExhaustedError(TagLLMError):
    """Too much at once: too many calls in flight, or a response larger than ``max_message_bytes``."""

    grpc_status = "RESOURCE_EXHAUSTED"


class DeadlineError(TagLLMError):
    """The caller's deadline passed before the work was done."""

    grpc_status = "DEADLINE_EXCEEDED"


class FailedPreconditionError(TagLLMError):
    """The server lacks a part the call needs (e.g. no tagger)."""

    grpc_status = "FAILED_PRECONDITION"


class UnavailableError(TagLLMError):
    """A transient failure of a dependency (the tagger); nothing was changed, retrying may work."""

    grpc_status = "UNAVAILABLE"
