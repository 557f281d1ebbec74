"""Python SDK for madsidecar: an asyncio `Client` and a `BlockingClient` over one core."""

from ._protocol import Notification, default_socket_path
from .aio import Client, NotificationStream
from .blocking import BlockingClient
from .errors import (
    BadFrameError,
    BadRequestError,
    CallTimeoutError,
    ConnectionLostError,
    ForbiddenError,
    FrameTooLargeError,
    InternalError,
    MadsidecarError,
    NotHeldError,
    ProtocolViolationError,
    ServerError,
    ServerTimeoutError,
    ShuttingDownError,
    UnavailableError,
    UnknownMethodError,
)

__all__ = [
    "BadFrameError",
    "BadRequestError",
    "BlockingClient",
    "CallTimeoutError",
    "Client",
    "ConnectionLostError",
    "ForbiddenError",
    "FrameTooLargeError",
    "InternalError",
    "MadsidecarError",
    "NotHeldError",
    "Notification",
    "NotificationStream",
    "ProtocolViolationError",
    "ServerError",
    "ServerTimeoutError",
    "ShuttingDownError",
    "UnavailableError",
    "UnknownMethodError",
    "default_socket_path",
]
