"""No secret in any log line, error or `stats` answer, over a full run.

One sidecar with every secret it can hold (a Redis ACL password in its URL and in a file,
the session secret), logging at debug level, goes through every capability, its error
paths, a reload, a Redis restart and a shutdown; every log line, every reply and every
error message it produced is then searched for every secret it saw.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from madsidecar_client import BlockingClient, ServerError, UnavailableError

from .support import RedisProcess, SidecarProcess, wait_until

USER, PASSWORD = "sidecar", "redis-pa55word-zq7"
SESSION_SECRET = "session-signing-secret-0123456789abcdef"


def every_capability(client: BlockingClient, seen: list[Any], secrets: list[str]) -> None:
    """Calls of every method that handles a secret, good and bad; replies go to `seen`,
    secrets the sidecar handed out to `secrets`."""

    def call(method: str, args: dict[str, Any]) -> Any:
        try:
            reply = client.call(method, args)
        except ServerError as exc:
            reply = {"error": exc.code, "message": exc.message, "data": exc.data}
        seen.append(reply)
        return reply

    made = call("session.create", {"user_id": "alice", "data": {"role": "admin"}})
    secrets.append(made["token"])
    call("session.get", {"token": made["token"]})
    rotated = call("session.rotate", {"token": made["token"]})
    secrets.append(rotated["token"])
    call("session.get", {"token": made["token"] + "x"})  # a bad token: nil, not echoed
    call("session.update", {"token": rotated["token"], "data": 5})
    call("session.revoke", {"token": rotated["token"]})
    call("session.get", {"token": 12})  # wrong type: BAD_REQUEST
    lock = call("lock.acquire", {"name": "L", "ttl_ms": 5000})
    secrets.append(lock["token"])
    call("lock.extend", {"name": "L", "token": lock["token"], "ttl_ms": 5000})
    call("lock.release", {"name": "L", "token": lock["token"][::-1]})  # not held
    call("lock.release", {"name": "L", "token": lock["token"]})
    lease = call("cache.fetch", {"key": "cold"})
    secrets.append(lease["lease"])
    call("cache.fill", {"key": "cold", "lease": lease["lease"][::-1], "value": 1})  # NOT_HELD
    call("cache.fill", {"key": "cold", "lease": lease["lease"], "value": 1})
    call("presence.track", {"channel": "room", "key": "alice", "meta": {"x": 1}})
    call("pubsub.publish", {"channel": "news", "message": "hi"})
    call("ratelimit.hit", {"key": "ip", "limit": 1, "window_ms": 1000})
    call("no.such.method", {})
    call("stats", {})
    call("health", {})


def redis_up(client: BlockingClient) -> bool:
    try:
        return bool(client.call("health")["ok"])
    except UnavailableError:
        return False


def test_no_secret_reaches_a_log_line_an_error_or_stats(tmp_path: Path) -> None:
    redis = RedisProcess(
        extra_args=["--user", "default", "off", "--user", USER, "on", f">{PASSWORD}",
                    "~*", "&*", "+@all"]
    ).start()  # fmt: skip
    secret_file = tmp_path / "session-secret"
    secret_file.write_text(SESSION_SECRET)
    password_file = tmp_path / "redis-password"
    password_file.write_text(PASSWORD)
    side = SidecarProcess(
        f"unix://{USER}@{redis.socket_path}",
        extra_args=["--log-level", "debug", "--redis-password-file", str(password_file),
                    "--session-secret-file", str(secret_file)],
    )  # fmt: skip
    # The password in the URL as well (a common way to pass it), for the redaction.
    side.redis_url = f"unix://{USER}:{PASSWORD}@{redis.socket_path}"
    seen: list[Any] = []
    handed_out: list[str] = []
    try:
        side.start()
        with side.client() as client:
            every_capability(client, seen, handed_out)
            side.signal(signal.SIGHUP)
            wait_until(lambda: "reloaded" in side.log(), timeout=10)
            redis.kill()
            wait_until(lambda: not redis_up(client), timeout=10)
            redis.start()
            wait_until(lambda: redis_up(client), timeout=10)
            every_capability(client, seen, handed_out)
        assert side.terminate() == 0
        log = side.log()
    finally:
        side.stop()
        redis.stop()
    assert log.count("\n") > 10, "the run logged too little to prove anything"
    answers = json.dumps(seen, default=repr)
    for secret in [PASSWORD, SESSION_SECRET, *handed_out]:
        assert secret not in log, f"a secret ({secret[:4]}…) is in the log"
    for secret in [PASSWORD, SESSION_SECRET]:
        assert secret not in answers, f"a secret ({secret[:4]}…) is in a reply or error"
    # Tokens go back only to their owner, in the reply that hands them out.
    for token in handed_out:
        assert answers.count(token) == 1, "a token was echoed in a later reply or error"
