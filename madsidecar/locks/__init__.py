"""Lock leases: fencing tokens, renewal by the sidecar, release on disconnect."""

from .capability import Locks

__all__ = ["Locks"]
