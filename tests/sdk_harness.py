"""A real Redis and a real sidecar for the Rust, Go and TypeScript SDKs' end-to-end tests.

    .venv/bin/python -m tests.sdk_harness      (from the repository root)

Prints one JSON line once both are ready:
    {"socket": "/tmp/.../madsidecar.sock", "redis_socket": "/tmp/.../redis.sock", "rules": [...]}
then takes one command per line on stdin and answers each with one line, "ok" or
"error: why":
    flush      FLUSHALL on the Redis: every lock is lost at its next renewal
    restart    SIGKILL the sidecar and start it again on the same socket
    stop       SIGKILL the sidecar (clients see the connection drop)
    start      start it again
End of stdin (the test process died or finished) stops both and removes their files.
"""

from __future__ import annotations

import json
import sys

from .support import RedisProcess, SidecarProcess

# Rules the SDK suites exercise by name.
CONFIG_TOML = """
[[ratelimit_rules]]
name = "sdk-test"
limit = 2
window_ms = 60000
"""
RULES = [{"name": "sdk-test", "limit": 2, "window_ms": 60000}]


def serve(redis: RedisProcess, sidecar: SidecarProcess) -> None:
    print(
        json.dumps(
            {"socket": sidecar.socket_path, "redis_socket": redis.socket_path, "rules": RULES}
        ),
        flush=True,
    )
    for line in sys.stdin:
        command = line.strip()
        try:
            run(command, redis, sidecar)
        except Exception as exc:  # the test reads the reason; the harness stays up
            print(f"error: {exc}", flush=True)
        else:
            print("ok", flush=True)


def run(command: str, redis: RedisProcess, sidecar: SidecarProcess) -> None:
    if command == "flush":
        flush(redis)
    elif command == "restart":
        kill(sidecar)
        sidecar.start()
    elif command == "stop":
        kill(sidecar)
    elif command == "start":
        sidecar.start()
    else:
        raise ValueError(f"unknown command {command!r}")


def kill(sidecar: SidecarProcess) -> None:
    if sidecar.process is not None and sidecar.process.poll() is None:
        sidecar.process.kill()
        sidecar.process.wait()


def flush(redis: RedisProcess) -> None:
    import redis as redis_py

    with redis_py.Redis(unix_socket_path=redis.socket_path) as direct:
        direct.flushall()


def main() -> int:
    redis = RedisProcess().start()
    sidecar = SidecarProcess(redis.url, config_toml=CONFIG_TOML)
    try:
        sidecar.start()
        serve(redis, sidecar)
    finally:
        sidecar.stop()
        redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
