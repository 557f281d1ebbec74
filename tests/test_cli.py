"""The command line a newcomer uses: run, ping, stats, --help, and its errors."""

from __future__ import annotations

import grp
import json
import os
import stat
import subprocess
import sys

from .support import RedisProcess, SidecarProcess, running_sidecar, short_tempdir


def madsidecar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "madsidecar", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_help_lists_the_commands_and_every_setting_with_its_env_var() -> None:
    top = madsidecar("--help")
    assert top.returncode == 0
    for command in ("run", "ping", "stats"):
        assert command in top.stdout
    run = madsidecar("run", "--help")
    assert run.returncode == 0
    for flag in ("--socket", "--redis-url", "--node-id", "--key-prefix", "--config"):
        assert flag in run.stdout
    assert "MADSIDECAR_REDIS_URL" in run.stdout
    assert "--redis-password " not in run.stdout, "secrets are never taken from argv"


def test_ping_and_stats_against_a_running_sidecar(sidecar: SidecarProcess) -> None:
    ping = madsidecar("ping", "--socket", sidecar.socket_path)
    assert ping.returncode == 0, ping.stderr
    assert ping.stdout.startswith("pong from ")
    stats = madsidecar("stats", "--json", env={"MADSIDECAR_SOCKET": sidecar.socket_path})
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["redis"]["connected"] is True


def test_stats_prints_a_readable_summary(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        client.call("cache.get", {"key": "absent"})
        client.call("cache.set", {"key": "k", "value": "v"})
        sources = [client.call("cache.get", {"key": "k"})["source"] for _ in range(4)]
        assert sources == ["l2", "l1", "l1", "l1"]
        client.call("lock.acquire", {"name": "m"})
        client.call("presence.track", {"channel": "lobby", "key": "ann"})
        limited = {"key": "ip", "limit": 1, "window_ms": 60_000}
        for _ in range(4):
            client.call("ratelimit.hit", limited)
        result = madsidecar("stats", "--socket", sidecar.socket_path)
        raw = json.loads(madsidecar("stats", "--json", "--socket", sidecar.socket_path).stdout)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"madsidecar {raw['version']} on node {raw['node_id']} (")
    rows = summary_rows(lines)
    assert rows["state"] == "connected"
    assert rows["connections"] == "2"  # the client above, and the `stats` command itself
    assert rows["L1 hit ratio"] == "60.0 %  (3 of 5 reads)"
    assert rows["Redis hit ratio"] == "50.0 %  (1 of 2 L1 misses)"
    assert rows["held"] == "1"
    assert rows["entries"] == "1"
    assert rows["decisions"] == "1 allowed, 3 denied (75.0 % denied)"
    assert rows["feed live"] == "yes", "keys without a line of their own are listed too"
    for section in ("redis", "cache", "locks", "sessions", "presence", "pubsub", "ratelimit"):
        assert section in lines, f"no {section} section"
    # One column: every value starts at the same offset.
    starts = set()
    for line in lines:
        if line.startswith("  "):
            label, _, text = line.strip().partition("  ")
            starts.add(line.index(text.strip(), 2 + len(label)))
    assert len(starts) == 1


def summary_rows(lines: list[str]) -> dict[str, str]:
    """label -> value of the summary's indented rows (the first row of a label wins)."""
    rows: dict[str, str] = {}
    for line in lines:
        if line.startswith("  "):
            label, _, text = line.strip().partition("  ")
            rows.setdefault(label, text.strip())
    return rows


def test_ping_with_no_sidecar_says_what_to_do() -> None:
    path = os.path.join(short_tempdir(), "none.sock")
    result = madsidecar("ping", "--socket", path)
    assert result.returncode == 1
    assert path in result.stderr and "madsidecar run" in result.stderr
    assert "Traceback" not in result.stderr


def test_configuration_error_names_the_setting_and_exits_2() -> None:
    result = madsidecar("run", env={"MADSIDECAR_MAX_INFLIGHT": "0"})
    assert result.returncode == 2
    assert "max_inflight: must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_second_sidecar_on_the_same_socket_refuses_to_start(sidecar: SidecarProcess) -> None:
    result = madsidecar(
        "run", "--socket", sidecar.socket_path, "--redis-url", sidecar.redis_url or ""
    )
    assert result.returncode == 1
    assert "already listening" in result.stderr
    with sidecar.client() as client:
        assert client.ping() == "pong", "the first one keeps serving"


def test_socket_mode_and_group(redis_server: RedisProcess) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    with running_sidecar(
        redis_server, extra_args=["--socket-mode", "0600", "--socket-group", group]
    ) as side:
        info = os.stat(side.socket_path)
        assert stat.S_IMODE(info.st_mode) == 0o600
        assert info.st_gid == os.getgid()


def test_env_settings_reach_the_daemon(redis_server: RedisProcess) -> None:
    env = {"MADSIDECAR_NODE_ID": "node-from-env"}
    with running_sidecar(redis_server, env=env) as side, side.client() as client:
        assert client.hello()["node_id"] == "node-from-env"


def test_abbreviated_flags_are_refused() -> None:
    result = madsidecar("run", "--redis-password", "x")
    assert result.returncode == 2
    assert "unrecognized arguments" in result.stderr


def test_embedded_dir_with_a_space() -> None:
    directory = os.path.join(short_tempdir(), "with space")
    side = SidecarProcess(redis_url=None, extra_args=["--embedded-dir", directory])
    try:
        side.start()
        with side.client() as client:
            assert client.call("health")["ok"]
    finally:
        side.stop()
