"""Who is on the other end of a Unix socket, from the kernel (SO_PEERCRED)."""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any, Final

from .config import PolicyRule

_UCRED: Final = struct.Struct("3i")


@dataclass(frozen=True)
class PeerCredentials:
    pid: int | None
    uid: int | None
    gid: int | None
    # The primary gid plus supplementary groups, as far as /proc lets us see them.
    groups: frozenset[int] = frozenset()


UNKNOWN_PEER: Final = PeerCredentials(None, None, None)


def read_peer_credentials(sock: Any) -> PeerCredentials:
    """SO_PEERCRED of a connected Unix socket; unknown fields are None."""
    if sock is None:
        return UNKNOWN_PEER
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    except (OSError, AttributeError):
        return UNKNOWN_PEER
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid, uid, gid, frozenset({gid}) | _supplementary_groups(pid))


def _supplementary_groups(pid: int) -> frozenset[int]:
    """The process's supplementary groups; empty when /proc hides them (hidepid)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:] if g.isdigit())
    except OSError:
        pass
    return frozenset()


def rule_for(rules: tuple[PolicyRule, ...], peer: PeerCredentials) -> PolicyRule | None:
    """The first rule matching the peer; None means the peer may do nothing."""
    for rule in rules:
        if rule.matches(peer.uid, peer.groups):
            return rule
    return None
