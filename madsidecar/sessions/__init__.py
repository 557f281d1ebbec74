"""session.*: one session store for every proxy of the fleet."""

from .capability import Sessions

__all__ = ["Sessions"]
