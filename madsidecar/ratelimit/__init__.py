"""ratelimit.*: exact distributed rate limits decided in Redis, answered locally when denied."""

from .capability import RateLimits

__all__ = ["RateLimits"]
