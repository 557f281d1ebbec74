"""The two-level cache: L1 per node, L2 in Redis, coherent across nodes."""

from .capability import Cache

__all__ = ["Cache"]
