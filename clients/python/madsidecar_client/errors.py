"""One exception class per protocol error code, plus the client's own failures."""

from __future__ import annotations

import builtins
from typing import Any


class MadsidecarError(Exception):
    """Base of every error this SDK raises."""

    code: str = ""

    def __init__(self, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data or {}


class ServerError(MadsidecarError):
    """The sidecar answered with an error map; `data` holds the whole map and
    `message` the sidecar's own words (str() prefixes the code)."""

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class BadFrameError(ServerError):
    code = "BAD_FRAME"


class FrameTooLargeError(ServerError):
    code = "FRAME_TOO_LARGE"


class BadRequestError(ServerError):
    code = "BAD_REQUEST"

    @property
    def argument(self) -> str | None:
        value = self.data.get("argument")
        return value if isinstance(value, str) else None


class UnknownMethodError(ServerError):
    code = "UNKNOWN_METHOD"


class ForbiddenError(ServerError):
    code = "FORBIDDEN"


class UnavailableError(ServerError):
    code = "UNAVAILABLE"

    @property
    def retry_after_ms(self) -> int:
        value = self.data.get("retry_after_ms", 0)
        return value if isinstance(value, int) else 0


class NotHeldError(ServerError):
    code = "NOT_HELD"


class ServerTimeoutError(ServerError):
    """The sidecar's bounded wait ran out (code TIMEOUT)."""

    code = "TIMEOUT"


class ShuttingDownError(ServerError):
    code = "SHUTTING_DOWN"


class InternalError(ServerError):
    code = "INTERNAL"

    @property
    def error_id(self) -> str | None:
        value = self.data.get("error_id")
        return value if isinstance(value, str) else None


class ConnectionLostError(MadsidecarError, ConnectionError):
    """The connection closed before the reply came; the call may or may not have run."""


class CallTimeoutError(MadsidecarError, builtins.TimeoutError):
    """No reply within the call's client-side timeout."""


class ProtocolViolationError(MadsidecarError):
    """The sidecar sent something this SDK cannot read."""


_BY_CODE: dict[str, type[ServerError]] = {
    cls.code: cls
    for cls in (
        BadFrameError,
        FrameTooLargeError,
        BadRequestError,
        UnknownMethodError,
        ForbiddenError,
        UnavailableError,
        NotHeldError,
        ServerTimeoutError,
        ShuttingDownError,
        InternalError,
    )
}


def error_from_map(error: Any) -> ServerError:
    """The exception for an error map; unknown codes become a plain ServerError."""
    if not isinstance(error, dict):
        return ServerError(f"malformed error: {error!r}", {})
    code = str(error.get("code", ""))
    message = str(error.get("message", code))
    cls = _BY_CODE.get(code, ServerError)
    exc = cls(message, error)
    exc.code = code
    return exc
