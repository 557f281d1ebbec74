"""`madsidecar stats`: the stats map as a summary a person reads at a glance.

The figures people ask for first (ratios, Redis state, what is held) get a line of their
own; every other key of the map is still shown, under its section, so a counter added
to a capability appears here without a change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

Rows = list[tuple[str, str]]

# Sections in the order an operator reads them; any other section follows, by name.
ORDER: Final = ("redis", "cache", "locks", "sessions", "presence", "pubsub", "ratelimit")
OVERVIEW_KEYS: Final = frozenset(
    {"uptime_ms", "connections", "requests", "node_id", "version", "compiled"}
)


def render(stats: dict[str, Any]) -> str:
    version = stats.get("version", "?")
    build = "compiled" if stats.get("compiled") else "plain Python"
    header = f"madsidecar {version} on node {stats.get('node_id', '?')} ({build})"
    sections: list[tuple[str, Rows]] = [("", _overview(stats))]
    named = [name for name in stats if isinstance(stats[name], dict)]
    for name in [*[n for n in ORDER if n in named], *sorted(set(named) - set(ORDER))]:
        curate = _CURATED.get(name)
        section: dict[str, Any] = stats[name]
        rows, shown = curate(section) if curate is not None else ([], set())
        rows += _rest(section, shown)
        sections.append((name, rows))
    loose = [k for k in stats if k not in OVERVIEW_KEYS and not isinstance(stats[k], dict)]
    sections[0][1].extend(_rest({k: stats[k] for k in loose}, set()))
    width = max((len(label) for _, rows in sections for label, _ in rows), default=0)
    lines = [header]
    for name, rows in sections:
        if name:
            lines += ["", name]
        lines += [f"  {label.ljust(width)}  {text}".rstrip() for label, text in rows]
    return "\n".join(lines)


def _overview(stats: dict[str, Any]) -> Rows:
    return [
        ("uptime", _duration(stats.get("uptime_ms"))),
        ("connections", _value(stats.get("connections"))),
        ("requests", _value(stats.get("requests"))),
    ]


def _redis(redis: dict[str, Any]) -> tuple[Rows, set[str]]:
    state = "connected" if redis.get("connected") else "DOWN"
    if redis.get("embedded"):
        state += " (embedded redis-server)"
    latency_us = redis.get("latency_us")
    latency = (
        "- (no health probe yet)"
        if latency_us is None
        else f"{latency_us / 1000:.2f} ms (last health probe)"
    )
    rows = [("state", state), ("latency", latency)]
    if redis.get("last_error"):
        rows.append(("last error", str(redis["last_error"])))
    return rows, {"connected", "embedded", "latency_us", "latency_ms", "last_error"}


def _cache(cache: dict[str, Any]) -> tuple[Rows, set[str]]:
    l1, l2, misses = (_int(cache, key) for key in ("l1_hits", "l2_hits", "misses"))
    rows = [
        ("L1 hit ratio", _ratio(l1, l1 + l2 + misses, "reads")),
        ("Redis hit ratio", _ratio(l2, l2 + misses, "L1 misses")),
        ("L1 entries", _value(cache.get("l1_entries"))),
        ("L1 size", _bytes(_int(cache, "l1_bytes"))),
    ]
    return rows, {"l1_hits", "l2_hits", "misses", "l1_entries", "l1_bytes"}


def _locks(locks: dict[str, Any]) -> tuple[Rows, set[str]]:
    return [("held", _value(locks.get("held")))], {"held"}


def _sessions(sessions: dict[str, Any]) -> tuple[Rows, set[str]]:
    hits, reads = _int(sessions, "l1_hits"), _int(sessions, "reads")
    return [("L1 hit ratio", _ratio(hits, reads, "reads"))], {"l1_hits", "reads"}


def _presence(presence: dict[str, Any]) -> tuple[Rows, set[str]]:
    return [("entries", _value(presence.get("tracked")))], {"tracked"}


def _ratelimit(ratelimit: dict[str, Any]) -> tuple[Rows, set[str]]:
    allowed, denied = _int(ratelimit, "allowed"), _int(ratelimit, "denied")
    decided = f"{allowed:,} allowed, {denied:,} denied"
    if allowed + denied:
        decided += f" ({100 * denied / (allowed + denied):.1f} % denied)"
    return [("decisions", decided)], {"allowed", "denied"}


_CURATED: Final[dict[str, Callable[[dict[str, Any]], tuple[Rows, set[str]]]]] = {
    "redis": _redis,
    "cache": _cache,
    "locks": _locks,
    "sessions": _sessions,
    "presence": _presence,
    "ratelimit": _ratelimit,
}


def _rest(section: dict[str, Any], shown: set[str]) -> Rows:
    return [(key.replace("_", " "), _value(section[key])) for key in section if key not in shown]


def _int(section: dict[str, Any], key: str) -> int:
    value = section.get(key)
    return value if type(value) is int else 0


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if type(value) is bool:
        return "yes" if value else "no"
    if type(value) is int:
        return f"{value:,}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=repr)
    return str(value)


def _ratio(part: int, whole: int, of: str) -> str:
    if whole == 0:
        return f"- (no {of} yet)"
    return f"{100 * part / whole:.1f} %  ({part:,} of {whole:,} {of})"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count:,} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _duration(ms: Any) -> str:
    if type(ms) is not int:
        return "-"
    seconds = ms // 1000
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {seconds:02d}s"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{ms / 1000:.1f} s"
