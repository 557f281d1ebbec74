"""The method table: every capability registers its methods here, with typed arguments.

A handler receives the calling client (namespace, peer, notifications) and its validated
arguments, defaults filled in. A plain function answers inline, in the same loop turn the
request was read; a coroutine function runs as a task. A plain function may also hand back
a `Deferred` (its answer waits on one Redis reply) or a coroutine (the rest of its work,
run as a task).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, cast

from mypy_extensions import mypyc_attr

from .config import MAX_NAME_BYTES, Config, PolicyRule
from .errors import QUOTE_CHARS, BadRequest, quoted
from .peer import PeerCredentials

_MISSING: Final = object()


class Client(Protocol):
    """What a handler may know of, and do to, the connection that called it."""

    @property
    def conn_id(self) -> int: ...

    @property
    def peer(self) -> PeerCredentials: ...

    @property
    def rule(self) -> PolicyRule | None: ...

    namespace: str
    client_name: str | None

    @property
    def closed(self) -> bool: ...

    @property
    def inflight(self) -> frozenset[Any]:
        """Requests of this connection still running (the caller excluded if inline)."""
        ...

    @property
    def congested(self) -> bool:
        """The client is not reading: its replies are piling up past the high-water mark."""
        ...

    def notify(self, name: str, payload: dict[str, Any]) -> None: ...


Handler = Callable[[Client, dict[str, Any]], Any]


def _check_name(value: Any) -> str | None:
    if type(value) is not str:
        return "must be a str"
    # A character is at most 4 UTF-8 bytes: short names need no encoding to be measured.
    if not value or (
        len(value) * 4 > MAX_NAME_BYTES
        and len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
    ):
        return f"must be 1 to {MAX_NAME_BYTES} UTF-8 bytes"
    return None


def _check_int(value: Any) -> str | None:
    return None if type(value) is int else "must be an integer"


def _check_bool(value: Any) -> str | None:
    return None if type(value) is bool else "must be true or false"


def _check_str(value: Any) -> str | None:
    return None if type(value) is str else "must be a str"


def _check_map(value: Any) -> str | None:
    return None if type(value) is dict else "must be a map"


def _check_names(value: Any) -> str | None:
    if type(value) not in (list, tuple):
        return "must be an array of str"
    for item in value:
        problem = _check_name(item)
        if problem is not None:
            return f"items {problem}"
    return None


def _check_any(value: Any) -> str | None:
    return None


_CHECKS: Final[dict[str, Callable[[Any], str | None]]] = {
    "name": _check_name,
    "int": _check_int,
    "bool": _check_bool,
    "str": _check_str,
    "map": _check_map,
    "names": _check_names,
    "any": _check_any,
}

_WIDE: Final = 1 << 64

# Kinds whose check is a type test, decided inline by `Method.bind`.
_PLAIN_TYPES: Final[dict[str, type]] = {"int": int, "bool": bool, "str": str, "map": dict}


@dataclass(frozen=True)
class Arg:
    """One named argument. `kind`: name, int, bool, str, map, names or any."""

    name: str
    kind: str
    default: Any = _MISSING
    minimum: int | None = None
    maximum: int | None = None
    # Derived once, for the per-request path.
    required: bool = field(init=False, repr=False)
    bounded: bool = field(init=False, repr=False)
    _kind_check: Callable[[Any], str | None] = field(init=False, repr=False, compare=False)
    # The exact type a value of this kind has, when the check is only that (else None):
    # `Method.bind` then accepts a value without calling `check`.
    plain_type: type | None = field(init=False, repr=False, compare=False)
    # A name short enough that its length in characters proves it fits.
    _short_name_chars: int = field(init=False, repr=False, compare=False)
    # The bounds as plain ints (wide sentinels when unbounded on a side).
    _low: int = field(init=False, repr=False, compare=False)
    _high: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in _CHECKS:
            raise ValueError(f"unknown argument kind {self.kind!r}")
        object.__setattr__(self, "_kind_check", _CHECKS[self.kind])
        object.__setattr__(self, "required", self.default is _MISSING)
        object.__setattr__(self, "bounded", self.minimum is not None or self.maximum is not None)
        object.__setattr__(self, "plain_type", _PLAIN_TYPES.get(self.kind))
        object.__setattr__(
            self, "_short_name_chars", MAX_NAME_BYTES // 4 if self.kind == "name" else 0
        )
        object.__setattr__(self, "_low", -_WIDE if self.minimum is None else self.minimum)
        object.__setattr__(self, "_high", _WIDE if self.maximum is None else self.maximum)

    def accepts_at_once(self, value: Any) -> bool:
        """True when `value` surely passes `check` (the common case, decided cheaply);
        False when `check` must decide."""
        kind = self.plain_type
        if kind is not None:
            if type(value) is not kind:
                return False
            if not self.bounded:
                return True
            number = cast(int, value)  # bounded kinds are "int"
            return self._low <= number <= self._high
        if self._short_name_chars:
            return type(value) is str and 0 < len(value) <= self._short_name_chars
        return self.kind == "any"

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "name": self.name,
            "type": self.kind,
            "required": self.required,
        }
        if not self.required and self.default is not None:
            described["default"] = self.default
        if self.minimum is not None:
            described["minimum"] = self.minimum
        if self.maximum is not None:
            described["maximum"] = self.maximum
        return described

    def check(self, method: str, value: Any) -> None:
        problem = self._kind_check(value)
        if problem is None and not self.bounded:
            return
        if problem is None and self.minimum is not None and value < self.minimum:
            problem = f"must be at least {self.minimum}"
        if problem is None and self.maximum is not None and value > self.maximum:
            problem = f"must be at most {self.maximum}"
        if problem is not None:
            raise BadRequest(f"{method}: argument '{self.name}' {problem}", argument=self.name)


@dataclass(frozen=True)
class Method:
    """One callable method. `ordered_by` names the argument holding the key (or list of
    keys): requests of one connection on the same key take effect in arrival order. A
    `barrier` method (a prefix invalidation) waits for everything of the connection that
    is running and holds back everything of its group that follows."""

    name: str
    handler: Handler
    args: Sequence[Arg] = ()
    ordered_by: str | None = None
    barrier: bool = False
    group: str = ""
    is_async: bool = field(init=False)
    _by_name: Mapping[str, Arg] = field(init=False, repr=False)
    _args: tuple[Arg, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", self.name.split(".", 1)[0])
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.handler))
        object.__setattr__(self, "_by_name", {arg.name: arg for arg in self.args})
        object.__setattr__(self, "_args", tuple(self.args))

    def describe(self) -> dict[str, Any]:
        """This method as plain data: its name and its arguments in canonical order."""
        return {"name": self.name, "group": self.group, "args": [a.describe() for a in self.args]}

    def bind(self, given: dict[str, Any]) -> dict[str, Any]:
        """Validate `given`, fill defaults; `BadRequest` naming the first bad argument.

        The defaults are filled into `given` itself, which the caller hands over (a map
        decoded for this request): no second map per request."""
        if not given and not self.args:
            return given
        if not self._by_name.keys() >= given.keys():
            for name in given:
                if name not in self._by_name:
                    short = type(name) is str and len(name) <= QUOTE_CHARS
                    raise BadRequest(
                        f"{self.name}: unknown argument {quoted(name)}",
                        argument=name if short else quoted(name),
                    )
        for arg in self._args:
            value = given.get(arg.name, _MISSING)
            if value is _MISSING or (value is None and not arg.required):
                if arg.required:
                    raise BadRequest(
                        f"{self.name}: missing required argument '{arg.name}'", argument=arg.name
                    )
                given[arg.name] = arg.default
            elif not arg.accepts_at_once(value):
                arg.check(self.name, value)
        return given


class Capability(Protocol):
    """A feature module: a method group plus what it owns per connection."""

    group: str

    def methods(self) -> Iterable[Method]: ...

    def stats(self) -> dict[str, Any]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def connection_closed(self, client: Client) -> None: ...

    def reconfigure(self, config: Config) -> None:
        """SIGHUP reloaded the configuration (only reloadable settings change)."""
        ...


# Capabilities written in plain Python (tests, extensions) may derive from it even when
# this module is compiled.
@mypyc_attr(allow_interpreted_subclasses=True)
class CapabilityBase:
    """Defaults for the parts of `Capability` a module may not need."""

    group: str = ""

    def methods(self) -> Iterable[Method]:
        return ()

    def stats(self) -> dict[str, Any]:
        return {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def connection_closed(self, client: Client) -> None:
        return None

    def reconfigure(self, config: Config) -> None:
        return None


class MethodTable:
    """Name -> Method, filled once at start from the capabilities."""

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}

    def register(self, method: Method) -> None:
        if method.name in self._methods:
            raise ValueError(f"method {method.name!r} registered twice")
        self._methods[method.name] = method

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    @property
    def by_name(self) -> Mapping[str, Method]:
        """The table itself, for the dispatch hot path."""
        return self._methods

    def names(self) -> list[str]:
        return sorted(self._methods)
