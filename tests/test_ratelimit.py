"""Rate limits on real Redis: two sidecars as two nodes of a fleet."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from madsidecar.ratelimit.capability import REMEMBERED_CHECKS
from madsidecar_client import BadRequestError, BlockingClient, Client

from .support import RedisProcess, SidecarProcess

HOUR_MS = 3_600_000
ALGORITHMS = ("sliding_window", "sliding_counter", "gcra")

RULES = """
[[ratelimit_rules]]
name = "per-ip"
limit = 3
window_ms = 3600000

[[ratelimit_rules]]
name = "per-user"
limit = 2
window_ms = 3600000
algorithm = "gcra"
overrides = { "vip" = 5, "slow" = { limit = 1, window_ms = 7200000 } }

[[ratelimit_rules]]
name = "trial"
limit = 2
window_ms = 3600000
shadow = true

[[ratelimit_rules]]
name = "down-allow"
limit = 2
window_ms = 3600000

[[ratelimit_rules]]
name = "down-deny"
limit = 2
window_ms = 3600000
on_redis_down = "deny"

[[ratelimit_rules]]
name = "down-local"
limit = 3
window_ms = 3600000
algorithm = "sliding_counter"
on_redis_down = "local"
"""


def hit(client: BlockingClient, key: str, **args: Any) -> dict[str, Any]:
    if "rule" not in args:
        args = {"limit": 3, "window_ms": HOUR_MS, **args}
    result: dict[str, Any] = client.call("ratelimit.hit", {"key": key, **args})
    assert result["retry_after_ms"] >= 0 and result["reset_ms"] >= 0
    assert result["remaining"] >= 0
    return result


def evalsha_calls(direct: redis.Redis) -> int:
    stats = direct.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(
        stats.get("cmdstat_eval", {}).get("calls", 0)
    )


@pytest.fixture
def direct(redis_server: RedisProcess) -> Iterator[redis.Redis]:
    client = redis.Redis(unix_socket_path=redis_server.socket_path)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def ruled(redis_server: RedisProcess) -> Iterator[SidecarProcess]:
    side = SidecarProcess(
        redis_server.url,
        config_toml=RULES,
        # Commands wait for a hung Redis far longer than a rate-limit check does.
        extra_args=["--redis-timeout-ms", "5000", "--ratelimit-timeout-ms", "50"],
    )
    try:
        yield side.start()
    finally:
        side.stop()


@pytest.mark.parametrize("algorithm", ["sliding_window", "gcra"])
def test_a_thousand_concurrent_hits_on_two_nodes_allow_exactly_the_limit(
    nodes: tuple[SidecarProcess, SidecarProcess], algorithm: str
) -> None:
    args = {"key": "login:10.0.0.1", "limit": 100, "window_ms": HOUR_MS, "algorithm": algorithm}

    async def race() -> list[dict[str, Any]]:
        # Both connections are open before the first hit, so the nodes race for the units.
        on_a = await Client.connect(nodes[0].socket_path)
        on_b = await Client.connect(nodes[1].socket_path)
        try:
            calls = [client.call("ratelimit.hit", args) for client in (on_a, on_b) * 500]
            return list(await asyncio.gather(*calls))
        finally:
            await on_a.close()
            await on_b.close()

    results = asyncio.run(race())
    assert len(results) == 1000
    assert sum(result["allowed"] for result in results) == 100


def test_sliding_window_never_exceeds_the_limit_in_any_window(
    sidecar: SidecarProcess, direct: redis.Redis
) -> None:
    """Bursts land just before and just after earlier hits leave the window; the burst
    times are read from Redis's clock, the clock the limit runs on."""
    limit, window_ms = 10, 300
    bursts: list[tuple[float, float, int]] = []  # (redis time before, after, allowed)

    def redis_now() -> float:
        seconds, micros = direct.time()
        return seconds + micros / 1e6

    with sidecar.client() as client:
        args = {"key": "burst", "limit": limit, "window_ms": window_ms}
        start = redis_now()
        # Offsets (ms) chosen around multiples of the window from the first burst.
        for offset in (0, 5, 150, 290, 298, 302, 310, 450, 590, 600, 605, 890, 905, 1210):
            delay = start + offset / 1000 - redis_now()
            if delay > 0:
                time.sleep(delay)
            before = redis_now()
            results = client.pipeline([("ratelimit.hit", args)] * 15)
            after = redis_now()
            bursts.append((before, after, sum(result["allowed"] for result in results)))
    assert bursts[0][2] == limit
    for first in range(len(bursts)):
        for last in range(first, len(bursts)):
            span = bursts[last][1] - bursts[first][0]
            if span < window_ms / 1000:
                inside = sum(allowed for _, _, allowed in bursts[first : last + 1])
                assert inside <= limit, (first, last, bursts)
    assert sum(allowed for _, _, allowed in bursts) > 2 * limit, "the window never slid"


def test_sliding_counter_stays_within_its_documented_bound(
    sidecar: SidecarProcess, direct: redis.Redis
) -> None:
    """Bound (docs/ratelimit.md): at most `limit` in each fixed window, and so at most
    2 x limit in any sliding one; bursts either side of the fixed windows' boundaries."""
    limit, window_ms = 10, 400
    window_s = window_ms / 1000

    def redis_now() -> float:
        seconds, micros = direct.time()
        return seconds + micros / 1e6

    per_fixed_window: dict[int, int] = {}
    bursts: list[tuple[float, float, int]] = []
    with sidecar.client() as client:
        args = {"key": "edge", "limit": limit, "window_ms": window_ms}
        args["algorithm"] = "sliding_counter"
        boundary = (int(redis_now() / window_s) + 1) * window_s
        for index in range(4):
            for offset in (-0.02, 0.003, 0.2):
                delay = boundary + index * window_s + offset - redis_now()
                if delay > 0:
                    time.sleep(delay)
                before = redis_now()
                results = client.pipeline([("ratelimit.hit", args)] * 12)
                after = redis_now()
                allowed = sum(result["allowed"] for result in results)
                bursts.append((before, after, allowed))
                if int(before / window_s) == int(after / window_s):
                    fixed = int(before / window_s)
                    per_fixed_window[fixed] = per_fixed_window.get(fixed, 0) + allowed
    assert per_fixed_window and all(count <= limit for count in per_fixed_window.values())
    for first in range(len(bursts)):
        for last in range(first, len(bursts)):
            if bursts[last][1] - bursts[first][0] < window_s:
                assert sum(b[2] for b in bursts[first : last + 1]) <= 2 * limit


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_hit_after_waiting_retry_after_is_allowed(
    sidecar: SidecarProcess, algorithm: str
) -> None:
    with sidecar.client() as client:
        args = {"limit": 4, "window_ms": 250, "algorithm": algorithm}
        for round_ in range(3):
            while hit(client, "wait", **args)["allowed"]:
                pass
            denied = hit(client, "wait", **args)
            assert not denied["allowed"] and 0 < denied["retry_after_ms"] <= 500
            time.sleep(denied["retry_after_ms"] / 1000)
            assert hit(client, "wait", **args)["allowed"], (round_, denied)


def test_cost_counts_units_and_a_denied_hit_consumes_nothing(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        for algorithm in ALGORITHMS:
            args = {"limit": 10, "window_ms": HOUR_MS, "algorithm": algorithm}
            assert hit(client, "cost", cost=7, **args)["remaining"] == 3
            denied = hit(client, "cost", cost=4, **args)
            assert not denied["allowed"] and denied["remaining"] == 3
            assert hit(client, "cost", cost=3, **args)["remaining"] == 0


def test_hits_of_one_counter_sent_together_each_count_every_unit(
    sidecar: SidecarProcess, direct: redis.Redis
) -> None:
    """Hits written in one go reach Redis as one script call, where they share one
    microsecond of Redis's clock: every unit still counts, in the order sent."""
    costs = [1, 3, 1, 2, 1, 2, 1]
    args = {"key": "together", "limit": 10, "window_ms": HOUR_MS}
    with sidecar.client() as client:
        calls = [("ratelimit.hit", {**args, "cost": cost}) for cost in costs]
        client.call("ratelimit.peek", args)  # the script loaded
        before = evalsha_calls(direct)
        results = client.pipeline(calls)
        assert evalsha_calls(direct) - before == 1, "one write, one script call"
        assert [r["remaining"] for r in results] == [9, 6, 5, 3, 2, 0, 0]
        assert [r["allowed"] for r in results] == [True] * 6 + [False]
        assert client.call("ratelimit.peek", args)["remaining"] == 0
    (counter,) = direct.keys("*together*")
    assert direct.zcard(counter) == 10, "one sorted-set entry per unit consumed"


def test_more_keys_than_the_node_remembers_still_count_exactly(
    sidecar: SidecarProcess,
) -> None:
    """The node remembers checks (and their encoded script arguments) for the keys it
    sees most; past REMEMBERED_CHECKS keys it starts afresh, which changes no count."""
    keys = [f"many:{i}" for i in range(REMEMBERED_CHECKS + REMEMBERED_CHECKS // 8)]
    args = {"limit": 2, "window_ms": HOUR_MS}
    with sidecar.client() as client:
        for start in range(0, len(keys), 1000):
            calls = [("ratelimit.hit", {"key": k, **args}) for k in keys[start : start + 1000]]
            assert all(r["remaining"] == 1 for r in client.pipeline(calls))
        again = client.pipeline([("ratelimit.hit", {"key": k, **args}) for k in keys[:200]])
        assert [r["remaining"] for r in again] == [0] * 200
        spent = client.pipeline([("ratelimit.hit", {"key": k, **args}) for k in keys[:200]])
        assert not any(r["allowed"] for r in spent)


def test_hit_many_is_all_or_nothing(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        ip = {"key": "ip:1", "limit": 5, "window_ms": HOUR_MS}
        user = {"key": "user:1", "limit": 1, "window_ms": HOUR_MS, "algorithm": "gcra"}
        tenant = {"key": "tenant:1", "limit": 5, "window_ms": HOUR_MS}
        tenant["algorithm"] = "sliding_counter"
        first = client.call("ratelimit.hit_many", {"checks": [ip, user, tenant]})
        assert first["allowed"] and [r["remaining"] for r in first["results"]] == [4, 0, 4]
        second = client.call("ratelimit.hit_many", {"checks": [ip, user, tenant]})
        assert not second["allowed"]
        assert [r["allowed"] for r in second["results"]] == [True, False, True]
        # The denied call consumed nothing on the checks that would have passed.
        assert client.call("ratelimit.peek", ip)["remaining"] == 4
        assert client.call("ratelimit.peek", tenant)["remaining"] == 4
        with pytest.raises(BadRequestError, match="same counter"):
            client.call("ratelimit.hit_many", {"checks": [ip, ip]})
        with pytest.raises(BadRequestError, match=r"checks\[1\].*'window_ms'"):
            client.call("ratelimit.hit_many", {"checks": [ip, {"key": "x", "limit": 1}]})
        with pytest.raises(BadRequestError, match="checks"):
            client.call("ratelimit.hit_many", {"checks": []})


def test_scripts_forgotten_by_redis_are_sent_again_not_degraded(
    sidecar: SidecarProcess, direct: redis.Redis
) -> None:
    """After a Redis restart (or SCRIPT FLUSH) the check still runs in Redis, exactly: the
    sidecar sends the script itself once EVALSHA says NOSCRIPT, and never takes that for
    Redis being down (a degraded decision)."""
    with sidecar.client() as client:
        for algorithm in ALGORITHMS:
            for remaining in (2, 1, 0):
                direct.script_flush()
                got = hit(client, f"flushed-{algorithm}", algorithm=algorithm)
                assert got["allowed"] and got["remaining"] == remaining, got
                assert "degraded" not in got or got["degraded"] is False
            direct.script_flush()
            denied = hit(client, f"flushed-{algorithm}", algorithm=algorithm)
            assert not denied["allowed"] and denied.get("degraded", False) is False


def test_peek_consumes_nothing(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        for algorithm in ALGORITHMS:
            args = {"key": "peek", "limit": 3, "window_ms": HOUR_MS, "algorithm": algorithm}
            hit(client, **args)
            for _ in range(10):
                peeked = client.call("ratelimit.peek", args)
                assert peeked["allowed"] and peeked["remaining"] == 2
            assert hit(client, **args)["remaining"] == 1


def test_rules_overrides_and_shadow(ruled: SidecarProcess) -> None:
    with ruled.client() as client:
        assert [hit(client, "10.0.0.1", rule="per-ip")["allowed"] for _ in range(4)] == [
            True,
            True,
            True,
            False,
        ]
        assert [hit(client, "vip", rule="per-user")["allowed"] for _ in range(6)] == [
            *[True] * 5,
            False,
        ]
        slow = hit(client, "slow", rule="per-user")
        assert slow["limit"] == 1 and slow["reset_ms"] > HOUR_MS
        trial = [hit(client, "t", rule="trial") for _ in range(5)]
        assert all(result["allowed"] and result["shadow"] for result in trial)
        assert [result["would_deny"] for result in trial] == [False, False, True, True, True]
        assert client.stats()["ratelimit"]["shadow_denied"] == 3
        with pytest.raises(BadRequestError, match="'limit' cannot be given with 'rule'"):
            client.call("ratelimit.hit", {"key": "k", "rule": "per-ip", "limit": 9})
        with pytest.raises(BadRequestError, match=r"no rule named 'nope'.*per-ip"):
            client.call("ratelimit.hit", {"key": "k", "rule": "nope"})


def test_bad_arguments_are_named(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        cases = [
            ({"key": "k"}, "missing required argument 'limit'"),
            ({"key": "k", "limit": 2, "window_ms": 10, "cost": 3}, "'cost' \\(3\\) is over"),
            ({"key": "k", "limit": 2, "window_ms": 10, "algorithm": "leaky"}, "'algorithm'"),
            ({"key": "k", "limit": 20_000, "window_ms": 10}, "sliding_counter"),
            ({"key": "k", "limit": 2, "window_ms": 0}, "'window_ms' must be at least 1"),
            ({"key": "k", "limit": 2, "window_ms": 10, "on_redis_down": "x"}, "on_redis_down"),
        ]
        for args, message in cases:
            with pytest.raises(BadRequestError, match=message):
                client.call("ratelimit.hit", args)


def test_repeated_denials_of_one_key_cost_redis_nothing(
    sidecar: SidecarProcess, direct: redis.Redis
) -> None:
    with sidecar.client() as client:
        args = {"key": "flood", "limit": 2, "window_ms": HOUR_MS}
        while client.call("ratelimit.hit", args)["allowed"]:
            pass
        before_calls = evalsha_calls(direct)
        before = client.stats()["ratelimit"]["denied_locally"]
        results = client.pipeline([("ratelimit.hit", args)] * 200)
        assert not any(result["allowed"] for result in results)
        assert all(result["retry_after_ms"] > 0 for result in results)
        assert evalsha_calls(direct) == before_calls
        assert client.stats()["ratelimit"]["denied_locally"] == before + 200
        # A smaller cost may fit where the remembered one did not: it asks Redis.
        other = {"key": "flood2", "limit": 5, "window_ms": HOUR_MS}
        assert hit(client, cost=4, **other)["allowed"]
        assert not hit(client, cost=2, **other)["allowed"]
        assert hit(client, cost=1, **other)["allowed"]


def test_reset_on_one_node_clears_the_denials_every_node_remembers(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    args = {"key": "banned", "limit": 1, "window_ms": HOUR_MS}
    with a.client() as on_a, b.client() as on_b:
        assert on_b.call("ratelimit.hit", args)["allowed"]
        assert not on_b.call("ratelimit.hit", args)["allowed"]
        assert not on_b.call("ratelimit.hit", args)["allowed"]
        assert on_b.stats()["ratelimit"]["remembered_denials"] == 1
        assert on_a.call("ratelimit.reset", {"key": "banned"}) == {"ok": True}
        deadline = time.monotonic() + 10
        while on_b.stats()["ratelimit"]["remembered_denials"]:
            assert time.monotonic() < deadline, "node b never heard of the reset"
        assert on_b.call("ratelimit.hit", args)["allowed"]


def test_redis_stopped_each_on_redis_down_mode_decides(
    ruled: SidecarProcess, redis_server: RedisProcess
) -> None:
    with ruled.client() as client:
        assert hit(client, "warm", rule="down-allow")["allowed"]
        redis_server.kill()
        started = time.monotonic()
        allow = hit(client, "x", rule="down-allow")
        assert allow["allowed"] and allow["degraded"]
        deny = hit(client, "x", rule="down-deny")
        assert not deny["allowed"] and deny["degraded"] and deny["retry_after_ms"] > 0
        local = [hit(client, "x", rule="down-local") for _ in range(4)]
        assert [r["allowed"] for r in local] == [True, True, True, False]
        assert all(r["degraded"] for r in local)
        adhoc = hit(client, "y", on_redis_down="deny")
        assert not adhoc["allowed"] and adhoc["degraded"]
        # Generous bound: Redis is gone, so nothing should wait for it at all.
        assert time.monotonic() - started < 5
    assert "ratelimit_degraded" in ruled.log()


def test_redis_hung_decides_within_the_ratelimit_timeout(
    ruled: SidecarProcess, redis_server: RedisProcess
) -> None:
    """SIGSTOP: Redis holds every command, which waits up to redis_timeout_ms (5 s);
    a rate-limit check waits ratelimit_timeout_ms (50 ms) and then decides."""
    assert redis_server.process is not None
    with ruled.client() as client:
        assert hit(client, "warm", rule="down-deny")["allowed"]
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            rules = ("down-allow", "down-deny")
            results = client.pipeline([("ratelimit.hit", {"key": "h", "rule": r}) for r in rules])
            elapsed = time.monotonic() - started
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert [r["allowed"] for r in results] == [True, False]
        assert all(r["degraded"] for r in results)
        assert elapsed < 2.5, "a check waited for the command timeout, not its own"
        assert client.stats()["ratelimit"]["redis_timeouts"] == 2
        # Redis answers again: the next check is decided by Redis.
        assert "degraded" not in hit(client, "after", rule="down-deny")


def test_sighup_reloads_rules(redis_server: RedisProcess) -> None:
    side = SidecarProcess(
        redis_server.url,
        config_toml='[[ratelimit_rules]]\nname = "api"\nlimit = 1\nwindow_ms = 3600000\n',
    )
    try:
        side.start()
        with side.client() as client:
            assert hit(client, "k", rule="api")["allowed"]
            assert not hit(client, "k", rule="api")["allowed"]
            assert side.config_path is not None
            with open(side.config_path, "w") as fh:
                fh.write(
                    '[[ratelimit_rules]]\nname = "api"\nlimit = 3\nwindow_ms = 3600000\n'
                    '[[ratelimit_rules]]\nname = "new"\nlimit = 1\nwindow_ms = 1000\n'
                )
            side.signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while client.stats()["ratelimit"]["rules"] != 2:
                assert time.monotonic() < deadline, side.log()
            # The raised limit applies at once, remembered denials notwithstanding.
            assert hit(client, "k", rule="api")["remaining"] == 1
    finally:
        side.stop()


def test_namespaces_do_not_share_counters(redis_server: RedisProcess) -> None:
    toml = '[[policy]]\nnamespaces = ["default", "billing"]\n'
    side = SidecarProcess(redis_server.url, config_toml=toml)
    try:
        side.start()
        with side.client() as plain, side.client() as billing, side.client() as other:
            billing.hello(namespace="billing")
            args = {"key": "shared-name", "limit": 1, "window_ms": HOUR_MS}
            assert plain.call("ratelimit.hit", args)["allowed"]
            assert billing.call("ratelimit.hit", args)["allowed"]
            assert not other.call("ratelimit.hit", args)["allowed"]
    finally:
        side.stop()
