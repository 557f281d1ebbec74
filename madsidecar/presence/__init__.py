"""presence.*: who is online in which channel, across every node."""

from .capability import Presence

__all__ = ["Presence"]
