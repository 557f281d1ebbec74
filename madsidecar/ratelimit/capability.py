"""ratelimit.*: exact limits shared by every node, decided by one Redis script per call.

Every check is one atomic script with Redis's clock; `hit_many` puts all its checks in
the same script, so they consume together or not at all. In a Redis Cluster, checks whose
keys sit in different slots cannot share a script: each slot's checks run as one, and
when one slot's are denied the others' are given back (refund.lua), so none consumes;
until the refund lands, the units are briefly held. Calls queued back to back on the
Redis link share one script call (each still decided on its own, in order). A denied hit
consumes nothing,
so once Redis says "denied until T" for a key, this node answers further hits of that key
(of the same cost or more) itself until T: a flood of blocked traffic costs Redis
nothing, and the answer is still exact. A `ratelimit.reset` anywhere drops those
remembered denials on every node (through the invalidation feed).

When Redis does not answer within `ratelimit_timeout_ms`, or is down, each check's
`on_redis_down` decides (allow, deny, or this node's own limiter), marked `degraded`.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from ..cache import Cache
from ..config import (
    MAX_WINDOW_MS,
    ON_REDIS_DOWN,
    RATE_ALGORITHMS,
    Config,
    RateRule,
    rate_limit_problem,
)
from ..deferred import Pending
from ..errors import BadRequest, SidecarError, Unavailable, quoted
from ..methods import Arg, CapabilityBase, Client, Method
from ..redis_gateway import RedisGateway
from ..redis_scripts import LuaScript, MergingScript, source_beside
from .fallback import Decision, LocalCheck, LocalLimiter
from .keys import ALGORITHM_SUFFIXES, RateKeys

log = structlog.get_logger("madsidecar.ratelimit")

MAX_CHECKS: Final = 64
# Checks remembered, by their arguments; past it, the memory starts afresh.
REMEMBERED_CHECKS: Final = 8192
# A degraded "deny" asks the caller to come back after this long (or the window, if shorter).
DEGRADED_RETRY_MS: Final = 1000


# Not frozen: mypyc compiles a plain dataclass's __init__, and one is made per check.
@dataclass(slots=True)
class Check:
    """One limit to test: a counter in Redis and how to decide on it."""

    counter: str
    tag: str
    algorithm: str
    limit: int
    window_ms: int
    cost: int
    on_redis_down: str
    shadow: bool
    # check.lua's arguments for this check alone, as a hit and as a peek (see _script_args).
    hit_args: tuple[Any, ...] = ()
    peek_args: tuple[Any, ...] = ()

    def script_args(self) -> tuple[str, int, int, int, int]:
        return (
            ALGORITHM_SUFFIXES[self.algorithm],
            self.limit,
            self.window_ms,
            self.cost,
            1 if self.shadow else 0,
        )

    def local(self) -> LocalCheck:
        return LocalCheck(self.counter, self.algorithm, self.limit, self.window_ms, self.cost)


@dataclass(slots=True)
class Denial:
    """Redis said no to `cost` units of `counter` until `until` (monotonic seconds)."""

    until: float
    cost: int
    limit: int
    window_ms: int
    remaining: int
    reset_at: float


class RateStats:
    __slots__ = (
        "allowed",
        "checks",
        "degraded",
        "denied",
        "denied_locally",
        "redis_timeouts",
        "shadow_denied",
    )

    def __init__(self) -> None:
        self.checks = self.allowed = self.denied = self.denied_locally = 0
        self.degraded = self.shadow_denied = self.redis_timeouts = 0


def _check_args(with_cost: bool) -> tuple[Arg, ...]:
    args: tuple[Arg, ...] = (
        Arg("key", "name"),
        Arg("limit", "int", None, minimum=1, maximum=2**40),
        Arg("window_ms", "int", None, minimum=1, maximum=MAX_WINDOW_MS),
        Arg("algorithm", "str", None),
        Arg("rule", "name", None),
        Arg("on_redis_down", "str", None),
    )
    if with_cost:
        args += (Arg("cost", "int", 1, minimum=1, maximum=2**40),)
    return args


_HIT_ARGS: Final = _check_args(with_cost=True)
_PEEK_ARGS: Final = _check_args(with_cost=False)


class RateLimits(CapabilityBase):
    group = "ratelimit"

    def __init__(self, config: Config, gateway: RedisGateway, cache: Cache) -> None:
        self._gateway = gateway
        self._cache = cache
        self._keys = RateKeys(config.key_prefix)
        self._check_script = MergingScript(source_beside(__name__, "check.lua"), repeated_args=True)
        self._reset_script = LuaScript.beside(__name__, "reset.lua")
        self._refund_script = LuaScript.beside(__name__, "refund.lua")
        self._rules: dict[str, RateRule] = {}
        self._checks: dict[tuple[Any, ...], Check] = {}
        self._timeout_s = 0.05
        self._max_log_limit = 0
        self._max_denials = config.ratelimit_denial_cache_entries
        self._denials: dict[str, Denial] = {}
        # Bumped by every reset anywhere: a denial decided before it is not remembered.
        self._generation = 0
        self._local = LocalLimiter(config.ratelimit_local_max_keys)
        self._deadlines: collections.deque[tuple[float, Pending]] = collections.deque()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._degraded_since: float | None = None
        self._stats = RateStats()
        # Validates each of hit_many's checks as hit's own arguments.
        self._check_binder = Method("ratelimit.hit_many", self.hit, _HIT_ARGS)
        self.reconfigure(config)
        cache.share_feed(self._keys.marker_root, self)

    def reconfigure(self, config: Config) -> None:
        self._rules = {rule.name: rule for rule in config.ratelimit_rules}
        # Rules, and the largest log, may have changed what a check's arguments mean.
        self._checks.clear()
        self._timeout_s = config.ratelimit_timeout_ms / 1000
        self._max_log_limit = config.ratelimit_max_log_limit
        # Limits may have changed: a remembered denial may no longer hold.
        self._denials.clear()

    def methods(self) -> Iterable[Method]:
        return (
            Method("ratelimit.hit", self.hit, _HIT_ARGS),
            Method("ratelimit.hit_many", self.hit_many, (Arg("checks", "any"),)),
            Method("ratelimit.peek", self.peek, _PEEK_ARGS),
            Method("ratelimit.reset", self.reset, (Arg("key", "name"), Arg("rule", "name", None))),
        )

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def stats(self) -> dict[str, Any]:
        s = self._stats
        return {
            "ratelimit": {
                "checks": s.checks,
                "allowed": s.allowed,
                "denied": s.denied,
                "denied_locally": s.denied_locally,
                "shadow_denied": s.shadow_denied,
                "degraded": s.degraded,
                "redis_timeouts": s.redis_timeouts,
                "remembered_denials": len(self._denials),
                "local_keys": len(self._local),
                "rules": len(self._rules),
            }
        }

    # -- methods --------------------------------------------------------------------------

    def hit(self, client: Client, args: dict[str, Any]) -> Any:
        check = self._check("ratelimit.hit", client.namespace, args, args["cost"])
        return self._decide((check,), True, single=True)

    def peek(self, client: Client, args: dict[str, Any]) -> Any:
        check = self._check("ratelimit.peek", client.namespace, args, 1)
        return self._decide((check,), False, single=True)

    def hit_many(self, client: Client, args: dict[str, Any]) -> Any:
        given = args["checks"]
        if type(given) not in (list, tuple) or not 1 <= len(given) <= MAX_CHECKS:
            raise BadRequest(
                f"ratelimit.hit_many: argument 'checks' must be an array of 1 to {MAX_CHECKS} maps",
                argument="checks",
            )
        checks: list[Check] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(given):
            where = f"ratelimit.hit_many: checks[{index}]"
            if type(item) is not dict:
                raise BadRequest(f"{where} must be a map", argument="checks")
            try:
                bound = self._check_binder.bind(item)
                check = self._check("ratelimit.hit_many", client.namespace, bound, bound["cost"])
            except BadRequest as exc:
                detail = exc.message.removeprefix("ratelimit.hit_many: ")
                raise BadRequest(f"{where}: {detail}", argument="checks") from None
            if check.counter in seen:
                raise BadRequest(
                    f"{where} uses the same counter as checks[{seen[check.counter]}]; "
                    "give it once, with the costs added",
                    argument="checks",
                )
            seen[check.counter] = index
            checks.append(check)
        return self._decide(checks, True, single=False)

    def reset(self, client: Client, args: dict[str, Any]) -> Any:
        rule = args["rule"]
        if rule is not None and rule not in self._rules:
            raise self._unknown_rule("ratelimit.reset", rule)
        tag = self._keys.tag(client.namespace, rule or "", args["key"])
        self._forget(tag)
        keys = [*self._keys.counters(tag), self._keys.marker(tag)]
        return self._reset_script.call(self._gateway, keys).map(_reset_done)

    # -- checks ---------------------------------------------------------------------------

    def _check(self, method: str, namespace: str, args: dict[str, Any], cost: int) -> Check:
        """The check `args` ask for, remembered: a busy node checks the same keys with the
        same limits over and over, and working one out costs a tenth of a hit."""
        memo = (
            namespace,
            args["rule"],
            args["key"],
            args["limit"],
            args["window_ms"],
            cost,
            args["algorithm"],
            args["on_redis_down"],
        )
        check = self._checks.get(memo)
        if check is None:
            check = self._new_check(method, namespace, args, cost)
            if len(self._checks) >= REMEMBERED_CHECKS:
                self._checks.clear()
            self._checks[memo] = check
        return check

    def _new_check(self, method: str, namespace: str, args: dict[str, Any], cost: int) -> Check:
        rule_name = args["rule"]
        key = args["key"]
        if rule_name is not None:
            for name in ("limit", "window_ms", "algorithm", "on_redis_down"):
                if args[name] is not None:
                    raise BadRequest(
                        f"{method}: argument '{name}' cannot be given with 'rule' (the rule "
                        "sets it)",
                        argument=name,
                    )
            rule = self._rules.get(rule_name)
            if rule is None:
                raise self._unknown_rule(method, rule_name)
            limit = rule.limit_for(key)
            algorithm, on_down, shadow = rule.algorithm, rule.on_redis_down, rule.shadow
            limit_value, window_ms = limit.limit, limit.window_ms
        else:
            for name in ("limit", "window_ms"):
                if args[name] is None:
                    raise BadRequest(
                        f"{method}: missing required argument '{name}' (or give 'rule')",
                        argument=name,
                    )
            limit_value, window_ms = args["limit"], args["window_ms"]
            algorithm = args["algorithm"] or "sliding_window"
            on_down = args["on_redis_down"] or "allow"
            shadow = False
            if algorithm not in RATE_ALGORITHMS:
                raise BadRequest(
                    f"{method}: argument 'algorithm' must be one of {', '.join(RATE_ALGORITHMS)}",
                    argument="algorithm",
                )
            if on_down not in ON_REDIS_DOWN:
                raise BadRequest(
                    f"{method}: argument 'on_redis_down' must be one of {', '.join(ON_REDIS_DOWN)}",
                    argument="on_redis_down",
                )
            problem = rate_limit_problem(algorithm, limit_value, window_ms, self._max_log_limit)
            if problem is not None:
                raise BadRequest(f"{method}: argument 'limit': {problem}", argument="limit")
        if cost > limit_value:
            raise BadRequest(
                f"{method}: argument 'cost' ({cost}) is over the limit ({limit_value}): it "
                "could never be allowed",
                argument="cost",
            )
        tag = self._keys.tag(namespace, rule_name or "", key)
        check = Check(
            self._keys.counter(tag, algorithm),
            tag,
            algorithm,
            limit_value,
            window_ms,
            cost,
            on_down,
            shadow,
        )
        script_args = check.script_args()
        check.hit_args = ("hit", 1, *script_args)
        check.peek_args = ("peek", 1, *script_args)
        return check

    def _unknown_rule(self, method: str, name: str) -> BadRequest:
        known = ", ".join(sorted(self._rules)) or "none configured"
        return BadRequest(
            f"{method}: argument 'rule': no rule named {quoted(name)} (known: {known})",
            argument="rule",
        )

    # -- deciding -------------------------------------------------------------------------

    def _decide(self, checks: Sequence[Check], consume: bool, single: bool) -> Any:
        self._stats.checks += len(checks)
        if self._denials:
            remembered = self._remembered(checks)
            if remembered is not None:
                return remembered[0] if single else _many(remembered)
        if len(checks) > 1 and self._gateway.is_cluster:
            slots = {self._gateway.slot_of(check.counter) for check in checks}
            if len(slots) > 1:
                return self._hit_across_slots(checks)
        counters, argv = _script_args(checks, consume)
        outcome = _Outcome(self, checks, consume, single, self._generation)
        deferred = self._check_script.call_then(
            self._gateway, counters, argv, outcome.decided, outcome.degraded
        )
        self._watch(deferred.pending)
        return deferred

    async def _hit_across_slots(self, checks: Sequence[Check]) -> dict[str, Any]:
        by_slot: dict[int, list[int]] = {}
        for index, check in enumerate(checks):
            by_slot.setdefault(self._gateway.slot_of(check.counter), []).append(index)
        groups = [[checks[index] for index in indexes] for indexes in by_slot.values()]
        generation = self._generation
        replies = await asyncio.gather(
            *(self._check_script.call(self._gateway, *_script_args(g, True)) for g in groups),
            return_exceptions=True,
        )
        failed = next((r for r in replies if isinstance(r, BaseException)), None)
        consumed = [
            (group, reply)
            for group, reply in zip(groups, replies, strict=True)
            if not isinstance(reply, BaseException) and reply[0] == 1
        ]
        if failed is None and len(consumed) == len(groups):
            results = [
                self._from_redis(group, reply, generation)
                for group, reply in zip(groups, replies, strict=True)
                if not isinstance(reply, BaseException)
            ]
            return self._in_order(checks, groups, results)
        for group, reply in consumed:
            await self._refund(group, reply)
        if failed is not None:
            return _many(self._degraded(checks, True, failed))
        results = []
        for group, reply in zip(groups, replies, strict=True):
            assert not isinstance(reply, BaseException)
            given_back = [
                check.cost if reply[0] == 1 and reply[1 + 4 * i] else 0
                for i, check in enumerate(group)
            ]
            group_results = self._from_redis(group, reply, generation)
            for result, cost in zip(group_results, given_back, strict=True):
                result["remaining"] += cost
            results.append(group_results)
        return self._in_order(checks, groups, results)

    async def _refund(self, group: list[Check], reply: list[int]) -> None:
        refunded = [check for i, check in enumerate(group) if reply[1 + 4 * i]]
        argv: list[Any] = [reply[-1]]
        for check in refunded:
            algorithm, limit, window_ms, cost, _ = check.script_args()
            argv += [algorithm, limit, window_ms, cost]
        try:
            await self._refund_script.call(self._gateway, [c.counter for c in refunded], argv)
        except SidecarError as exc:
            log.warning("ratelimit_refund_failed", reason=exc.message, checks=len(refunded))

    @staticmethod
    def _in_order(
        checks: Sequence[Check], groups: list[list[Check]], results: list[list[dict[str, Any]]]
    ) -> dict[str, Any]:
        by_check = {
            id(check): result
            for group, group_results in zip(groups, results, strict=True)
            for check, result in zip(group, group_results, strict=True)
        }
        return _many([by_check[id(check)] for check in checks])

    def _from_redis(
        self, checks: Sequence[Check], reply: list[int], generation: int
    ) -> list[dict[str, Any]]:
        if self._degraded_since is not None:
            log.info(
                "ratelimit_recovered",
                degraded_s=round(time.monotonic() - self._degraded_since, 3),
            )
            self._degraded_since = None
        remember = generation == self._generation and self._max_denials > 0
        now = time.monotonic()
        results = []
        for index, check in enumerate(checks):
            allowed, remaining, reset_ms, retry_ms = reply[1 + 4 * index : 5 + 4 * index]
            if not allowed and remember and retry_ms > 0:
                self._remember(check, now, remaining, reset_ms, retry_ms)
            results.append(self._result(check, bool(allowed), remaining, reset_ms, retry_ms))
        return results

    def _result(
        self, check: Check, allowed: bool, remaining: int, reset_ms: int, retry_ms: int
    ) -> dict[str, Any]:
        stats = self._stats
        if allowed:
            stats.allowed += 1
        else:
            stats.denied += 1
        result: dict[str, Any] = {
            "allowed": allowed,
            "limit": check.limit,
            "remaining": remaining,
            "reset_ms": reset_ms,
            "retry_after_ms": 0 if allowed else retry_ms,
        }
        if check.shadow:
            result["shadow"] = True
            result["would_deny"] = not allowed
            if not allowed:
                stats.shadow_denied += 1
                result["allowed"] = True
                result["retry_after_ms"] = 0
        return result

    # -- remembered denials ---------------------------------------------------------------

    def _remembered(self, checks: Sequence[Check]) -> list[dict[str, Any]] | None:
        """The answer without Redis, if a remembered denial decides it."""
        if not self._cache.feed_live:
            return None
        now = time.monotonic()
        denied: dict[int, Denial] = {}
        for index, check in enumerate(checks):
            denial = self._denials.get(check.counter)
            if denial is None:
                continue
            if now >= denial.until:
                del self._denials[check.counter]
            elif (
                check.cost >= denial.cost
                and check.limit == denial.limit
                and check.window_ms == denial.window_ms
                # A shadow check never decides a call: it always asks Redis.
                and not check.shadow
            ):
                denied[index] = denial
        if not denied:
            return None
        self._stats.denied_locally += len(denied)
        results = []
        for index, check in enumerate(checks):
            denial = denied.get(index)
            if denial is None:
                # Not evaluated: another check already decides the call.
                results.append(
                    {
                        "allowed": True,
                        "limit": check.limit,
                        "remaining": -1,
                        "reset_ms": 0,
                        "retry_after_ms": 0,
                        "evaluated": False,
                    }
                )
                continue
            results.append(
                self._result(
                    check,
                    False,
                    denial.remaining,
                    max(math.ceil((denial.reset_at - now) * 1000), 0),
                    max(math.ceil((denial.until - now) * 1000), 1),
                )
            )
        return results

    def _remember(
        self, check: Check, now: float, remaining: int, reset_ms: int, retry_ms: int
    ) -> None:
        denials = self._denials
        if check.counter not in denials and len(denials) >= self._max_denials:
            del denials[next(iter(denials))]
        denials[check.counter] = Denial(
            now + retry_ms / 1000,
            check.cost,
            check.limit,
            check.window_ms,
            remaining,
            now + reset_ms / 1000,
        )

    def _forget(self, tag: str) -> None:
        self._generation += 1
        for counter in self._keys.counters(tag):
            self._denials.pop(counter, None)

    def keys_invalidated(self, keys: list[str]) -> None:
        for key in keys:
            tag = self._keys.tag_of_marker(key)
            if tag is not None:
                self._forget(tag)

    def all_invalidated(self) -> None:
        self._generation += 1
        self._denials.clear()

    # -- Redis slow or down ---------------------------------------------------------------

    def _watch(self, pending: Pending) -> None:
        """Give up on `pending` after `ratelimit_timeout_ms`: its check's `on_redis_down`
        answers instead. One timer serves all: every check has the same timeout, so
        deadlines come in the order the checks were sent."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._deadlines.append((loop.time() + self._timeout_s, pending))
        if self._deadline_timer is None:
            self._deadline_timer = loop.call_at(self._deadlines[0][0], self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        assert self._loop is not None
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1].done()):
            _, pending = deadlines.popleft()
            if not pending.done():
                self._stats.redis_timeouts += 1
                timeout_ms = round(self._timeout_s * 1000)
                pending.set_exception(
                    Unavailable(f"redis did not answer within {timeout_ms} ms", timeout_ms)
                )
        if deadlines:
            self._deadline_timer = self._loop.call_at(deadlines[0][0], self._on_deadline)

    def _degraded(
        self, checks: Sequence[Check], consume: bool, error: BaseException
    ) -> list[dict[str, Any]]:
        if not isinstance(error, SidecarError):
            raise error
        if self._degraded_since is None:
            self._degraded_since = time.monotonic()
            log.warning("ratelimit_degraded", reason=error.message)
        self._stats.degraded += len(checks)
        passes = all(
            check.on_redis_down == "allow" or check.shadow
            for check in checks
            if check.on_redis_down != "local"
        )
        local = [check for check in checks if check.on_redis_down == "local"]
        decisions: dict[str, Decision] = {}
        if local:
            now_us = time.monotonic_ns() // 1000
            _, verdicts = self._local.decide(
                [check.local() for check in local], consume and passes, now_us
            )
            decisions = {check.counter: d for check, d in zip(local, verdicts, strict=True)}
        results = []
        for check in checks:
            decision = decisions.get(check.counter) or _fixed(check, consume)
            result = self._result(
                check,
                decision.allowed,
                decision.remaining,
                decision.reset_ms,
                decision.retry_after_ms,
            )
            result["degraded"] = True
            results.append(result)
        return results


def _fixed(check: Check, consume: bool) -> Decision:
    """`allow` or `deny`, without knowing the counter."""
    if check.on_redis_down == "allow":
        return Decision(True, max(check.limit - (check.cost if consume else 0), 0), 0, 0)
    return Decision(False, 0, 0, min(DEGRADED_RETRY_MS, check.window_ms))


def _script_args(checks: Sequence[Check], consume: bool) -> tuple[list[str], tuple[Any, ...]]:
    """The keys and arguments of check.lua's group for `checks`."""
    if len(checks) == 1:
        check = checks[0]
        return [check.counter], check.hit_args if consume else check.peek_args
    argv: list[Any] = ["hit" if consume else "peek", len(checks)]
    for check in checks:
        argv.extend(check.script_args())
    return [check.counter for check in checks], tuple(argv)


class _Outcome:
    """How one call's checks turn into its answer, from Redis's reply or without it.

    A class, not two closures: compiled, closures and their shared environment refer to
    each other, and every call would leave a cycle for the garbage collector (a tenth of
    the sidecar's time at 50k hits/s)."""

    __slots__ = ("checks", "consume", "generation", "limits", "single")

    def __init__(
        self,
        limits: RateLimits,
        checks: Sequence[Check],
        consume: bool,
        single: bool,
        generation: int,
    ) -> None:
        self.limits = limits
        self.checks = checks
        self.consume = consume
        self.single = single
        self.generation = generation

    def decided(self, reply: list[int]) -> Any:
        results = self.limits._from_redis(self.checks, reply, self.generation)
        return results[0] if self.single else _many(results)

    def degraded(self, error: BaseException) -> Any:
        results = self.limits._degraded(self.checks, self.consume, error)
        return results[0] if self.single else _many(results)


def _many(results: list[dict[str, Any]]) -> dict[str, Any]:
    allowed = all(result["allowed"] for result in results)
    return {"allowed": allowed, "results": results}


def _reset_done(_: Any) -> dict[str, Any]:
    return {"ok": True}
