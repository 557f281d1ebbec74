"""The error model of protocol v1: one code per failure class, carried in a map."""

from __future__ import annotations

import enum
from typing import Any


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


def error_map(code: ErrorCode, message: str, **extra: Any) -> dict[str, Any]:
    return {"code": str(code), "message": message, **extra}
