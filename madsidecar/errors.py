"""The error model of protocol v1: one code per failure class, carried in a map."""

from __future__ import annotations

import enum
from typing import Any, Final

# What a client sent is quoted in an error message cut to this many characters: the error
# must fit in a frame (max_frame_bytes can be as low as 1024), and echoing a 4 MiB method
# name or argument name back would turn one bad request into a reply larger than it.
QUOTE_CHARS: Final = 100


class ErrorCode(enum.StrEnum):
    BAD_FRAME = "BAD_FRAME"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    BAD_REQUEST = "BAD_REQUEST"
    UNKNOWN_METHOD = "UNKNOWN_METHOD"
    FORBIDDEN = "FORBIDDEN"
    UNAVAILABLE = "UNAVAILABLE"
    NOT_HELD = "NOT_HELD"
    TIMEOUT = "TIMEOUT"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    INTERNAL = "INTERNAL"


class SidecarError(Exception):
    """An error a handler raises to answer a request with a specific code."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra

    def to_map(self) -> dict[str, Any]:
        return {"code": str(self.code), "message": self.message, **self.extra}


class BadRequest(SidecarError):
    code = ErrorCode.BAD_REQUEST


class UnknownMethod(SidecarError):
    code = ErrorCode.UNKNOWN_METHOD


class Forbidden(SidecarError):
    code = ErrorCode.FORBIDDEN


class Unavailable(SidecarError):
    code = ErrorCode.UNAVAILABLE

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message, retry_after_ms=retry_after_ms)
        self.retry_after_ms = retry_after_ms


class NotHeld(SidecarError):
    code = ErrorCode.NOT_HELD


class Timeout(SidecarError):
    code = ErrorCode.TIMEOUT


class ShuttingDown(SidecarError):
    code = ErrorCode.SHUTTING_DOWN


def quoted(value: Any) -> str:
    """`repr(value)` for an error message: at most QUOTE_CHARS characters."""
    if isinstance(value, str | bytes):
        # A repr can be four times the value (escapes): cut before, not only after.
        value = value[: QUOTE_CHARS + 1]
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


def error_map(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": str(code), "message": message, **extra}
