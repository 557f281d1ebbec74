"""The systemd units in systemd/ and the daemon's half of the systemd contract.

Everything runs for real: systemd-analyze on the unit files, systemd-socket-activate and a
socket-holding parent for socket activation, a datagram socket for sd_notify, and the
unit's seccomp sandbox (SystemCallFilter=, MemoryDenyWriteExecute=,
RestrictAddressFamilies=) rebuilt with libseccomp around a sidecar and its embedded Redis.
Nothing sleeps to wait: every wait is on a notification, a log line or a process exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from madsidecar.cli import build_parser
from madsidecar.config import DEFAULT_SOCKET, env_name, load_config, scalar_settings
from madsidecar_client import BlockingClient

from .support import (
    REPO,
    START_TIMEOUT_S,
    NotifyListener,
    RedisProcess,
    SidecarProcess,
    require_binary,
    short_tempdir,
)

UNITS = REPO / "systemd"
SERVICE = UNITS / "madsidecar.service"
SOCKET_UNIT = UNITS / "madsidecar.socket"
SYSUSERS = UNITS / "madsidecar.sysusers"
EXAMPLE_CONFIG = UNITS / "madsidecar.conf"
INSTALLED_EXEC = "/usr/local/bin/madsidecar"
MAX_EXPOSURE = 3.0
ACTIVATED_LOG = re.compile(r"event='listening'.*socket='\(socket-activated\)'")

UnitFile = dict[str, dict[str, list[str]]]


# -- unit files ------------------------------------------------------------------------


def parse_unit(path: Path) -> UnitFile:
    """Sections -> key -> every value assigned (systemd allows repeating a key)."""
    unit: UnitFile = {}
    section: dict[str, list[str]] | None = None
    logical = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not logical and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        line, logical = (logical + line).strip(), ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        assert section is not None, f"{path}: {line!r} is outside any section"
        key, sep, value = line.partition("=")
        assert sep, f"{path}: {line!r} is not key=value"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def expand_specifiers(value: str) -> str:
    """The few specifiers the units use, as the system manager expands them."""
    table = {"t": "/run", "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "%": "%"}

    def one(match: re.Match[str]) -> str:
        assert match.group(1) in table, f"unexpected specifier %{match.group(1)}"
        return table[match.group(1)]

    return re.sub(r"%(.)", one, value)


def unit_environment(unit: UnitFile) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in unit["Service"].get("Environment", []):
        for assignment in shlex.split(value):
            name, _, val = assignment.partition("=")
            env[name] = expand_specifiers(val)
    return env


def runtime_directories(unit: UnitFile) -> list[Path]:
    return [
        Path("/run") / name.split(":")[0]
        for value in unit["Service"].get("RuntimeDirectory", [])
        for name in value.split()
    ]


def copy_units_for_verify(directory: Path) -> tuple[Path, Path]:
    """The units with ExecStart pointing at this venv's madsidecar, which verify needs
    to exist (the unit names the installed path, /usr/local/bin/madsidecar)."""
    script = Path(sys.executable).parent / "madsidecar"
    assert script.exists(), f"{script} missing: install the package into the venv"
    text = SERVICE.read_text()
    rewritten = text.replace(f"ExecStart={INSTALLED_EXEC} ", f"ExecStart={script} ")
    assert rewritten != text, f"the service's ExecStart no longer starts with {INSTALLED_EXEC}"
    service = directory / SERVICE.name
    service.write_text(rewritten)
    socket_unit = directory / SOCKET_UNIT.name
    shutil.copyfile(SOCKET_UNIT, socket_unit)
    return service, socket_unit


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("systemd-analyze"), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"},
    )


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    service, socket_unit = copy_units_for_verify(tmp_path)
    result = analyze("verify", "--man=no", str(service), str(socket_unit), cwd=tmp_path)
    # verify exits 0 on unknown keys and bad values; its silence is the real verdict.
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0


def test_verify_is_not_silent_about_mistakes(tmp_path: Path) -> None:
    """The check above would pass vacuously if verify said nothing about anything."""
    service, socket_unit = copy_units_for_verify(tmp_path)
    service.write_text(service.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    result = analyze("verify", "--man=no", str(service), str(socket_unit), cwd=tmp_path)
    assert "WatchdogSecs" in result.stdout + result.stderr


def test_service_exposure_level(tmp_path: Path) -> None:
    service, _ = copy_units_for_verify(tmp_path)
    result = analyze("security", "--offline=yes", "--no-pager", str(service), cwd=tmp_path)
    found = re.search(r"Overall exposure level for madsidecar\.service: (\d+\.\d+)", result.stdout)
    assert found, f"no exposure level in:\n{result.stdout}\n{result.stderr}"
    exposure = float(found.group(1))
    print(f"systemd-analyze security: overall exposure level {exposure}")
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_socket_path_is_not_inside_a_runtime_directory() -> None:
    """systemd deletes a RuntimeDirectory= when the service stops; the socket unit's
    listening socket must outlive every restart of the service."""
    service, socket_unit = parse_unit(SERVICE), parse_unit(SOCKET_UNIT)
    listen = [Path(expand_specifiers(v)) for v in socket_unit["Socket"]["ListenStream"]]
    assert listen == [Path(DEFAULT_SOCKET)]  # the contract's path
    runtime_dirs = runtime_directories(service)
    assert runtime_dirs, "the embedded redis-server needs a writable RuntimeDirectory"
    for directory in runtime_dirs:
        assert not listen[0].is_relative_to(directory), f"{listen[0]} is inside {directory}"
    # ProtectSystem=strict leaves only the RuntimeDirectory writable for embedded Redis.
    embedded = Path(unit_environment(service)["MADSIDECAR_EMBEDDED_DIR"])
    assert any(embedded.is_relative_to(d) for d in runtime_dirs), embedded


def test_service_matches_the_daemon() -> None:
    """ExecStart parses, every MADSIDECAR_* variable is a real setting, and the service
    is wired to the socket with the notify/watchdog protocol the daemon speaks."""
    unit = parse_unit(SERVICE)
    service = unit["Service"]
    (exec_start,) = service["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == INSTALLED_EXEC
    args = build_parser().parse_args(argv[1:])
    assert args.command == "run"
    assert args.config is None, "--config fails on a missing file; use MADSIDECAR_CONFIG"
    known = {env_name(s.name) for s in scalar_settings()} | {env_name("config")}
    assert set(unit_environment(unit)) <= known
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["WatchdogSec"]
    assert service["KillMode"] == ["mixed"]  # SIGTERM to the sidecar, not its Redis
    assert service.get("PrivateUsers", ["no"]) == ["no"]  # SO_PEERCRED must see real ids
    assert "madsidecar.socket" in unit["Unit"]["Requires"][0].split()
    assert "madsidecar.socket" in unit["Install"]["Also"][0].split()
    socket_unit = parse_unit(SOCKET_UNIT)["Socket"]
    assert socket_unit["SocketMode"] == ["0660"]
    assert socket_unit["SocketGroup"] == ["madsidecar"]


def test_sysusers_creates_the_socket_group(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [require_binary("systemd-sysusers"), f"--root={tmp_path}", str(SYSUSERS)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    users = {line.split(":")[0] for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    unit = parse_unit(SERVICE)["Service"]
    assert parse_unit(SOCKET_UNIT)["Socket"]["SocketGroup"][0] in groups
    assert unit["User"][0] in users
    assert unit["Group"][0] in groups


def test_example_config_loads() -> None:
    config = load_config({"config": str(EXAMPLE_CONFIG)}, {})
    assert config.socket == DEFAULT_SOCKET
    assert len(config.policy) >= 1


# -- sd_notify -------------------------------------------------------------------------


def lines_received(listener: NotifyListener) -> list[str]:
    return [line for message in listener.messages for line in message.splitlines()]


def wait_for_count(
    listener: NotifyListener, line: str, count: int, timeout: float = START_TIMEOUT_S
) -> list[str]:
    """Block until `count` datagram lines equal to `line` have arrived."""
    deadline = time.monotonic() + timeout
    while lines_received(listener).count(line) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"fewer than {count} {line!r} in {timeout} s: {listener.messages}")
        listener.sock.settimeout(remaining)
        with contextlib.suppress(TimeoutError):
            listener.messages.append(listener.sock.recv(65536).decode())
    return lines_received(listener)


@pytest.fixture
def notify_sidecar(
    redis_server: RedisProcess, request: pytest.FixtureRequest
) -> Iterator[SidecarProcess]:
    side = SidecarProcess(redis_server.url, env=request.param)
    try:
        yield side.start()
    finally:
        side.stop()


@pytest.mark.parametrize("notify_sidecar", [{"WATCHDOG_USEC": "200000"}], indirect=True)
def test_notify_ready_watchdog_stopping(notify_sidecar: SidecarProcess) -> None:
    side = notify_sidecar
    assert side.notify is not None
    lines = wait_for_count(side.notify, "WATCHDOG=1", 2)
    assert "READY=1" in lines
    assert f"MAINPID={side.pid}" in lines
    assert any(line.startswith("STATUS=") for line in lines)
    with side.client() as client:
        assert client.ping() == "pong"
    assert side.terminate() == 0, side.log()
    lines = side.notify.wait_for("STOPPING=1")
    lines = lines_received(side.notify)
    assert lines.index("READY=1") < lines.index("STOPPING=1")


@pytest.mark.parametrize(
    "notify_sidecar",
    [
        {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())},  # meant for another
        {"WATCHDOG_USEC": "0"},
    ],
    indirect=True,
    ids=["other-pid", "zero"],
)
def test_no_watchdog_unless_meant_for_this_process(notify_sidecar: SidecarProcess) -> None:
    """The watchdog starts before READY=1 and datagrams from one sender stay in order, so
    by STOPPING=1 any WATCHDOG=1 the daemon sent has arrived."""
    side = notify_sidecar
    assert side.notify is not None
    assert side.terminate() == 0, side.log()
    side.notify.wait_for("STOPPING=1")
    assert "WATCHDOG=1" not in lines_received(side.notify)


# -- socket activation -----------------------------------------------------------------


def read_until(stream: IO[bytes], needle: bytes, timeout: float = START_TIMEOUT_S) -> bytes:
    """Read a pipe until `needle` shows up (or fail at EOF or the deadline)."""
    fd = stream.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(remaining, 0))
        if not ready:
            raise TimeoutError(f"no {needle!r} within {timeout} s; got {seen!r}")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"EOF before {needle!r}; got {seen!r}")
        seen += chunk
    return seen


@pytest.fixture
def workdir() -> Iterator[str]:
    directory = short_tempdir("msc-sd-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_systemd_socket_activate(redis_server: RedisProcess, workdir: str) -> None:
    """systemd-socket-activate binds, waits for the first client, then execs the sidecar
    with the listening socket as fd 3 (LISTEN_FDS/LISTEN_PID): the client is served."""
    path = os.path.join(workdir, "madsidecar.sock")
    unused = os.path.join(workdir, "not-bound.sock")
    notify = NotifyListener(workdir)
    process = subprocess.Popen(
        [
            require_binary("systemd-socket-activate"),
            "--listen", path,
            "--setenv", f"NOTIFY_SOCKET={notify.path}",
            "--setenv", "PYTHONUNBUFFERED=1",
            sys.executable, "-m", "madsidecar", "run",
            "--redis-url", redis_server.url,
            "--socket", unused,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=workdir,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        early = read_until(process.stderr, b"Listening on")
        # This connection is what makes systemd-socket-activate exec the sidecar.
        with BlockingClient(path, timeout=START_TIMEOUT_S, reconnect=False) as client:
            assert client.ping() == "pong"
        notify.wait_for("READY=1")
        # exec, no fork: the sidecar is the process systemd-socket-activate was.
        assert f"MAINPID={process.pid}" in lines_received(notify)
        assert not os.path.exists(unused), "the sidecar bound --socket despite activation"
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=START_TIMEOUT_S)
        log = (early + rest).decode(errors="replace")
        assert process.returncode == 0, log
        assert ACTIVATED_LOG.search(log), log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        notify.close()


class ActivatedSidecar:
    """The sidecar started the way systemd starts it: the listening socket, owned by this
    (test) process, handed over as fd 3 with LISTEN_FDS=1 and LISTEN_PID=<its pid>."""

    LAUNCH = (
        "import os, sys\n"
        "fd = int(sys.argv[1])\n"
        "if fd != 3:\n"
        "    os.dup2(fd, 3)\n"
        "    os.close(fd)\n"
        "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))\n"
        "os.execv(sys.argv[2], sys.argv[2:])\n"
    )

    def __init__(self, listener: socket.socket, redis_url: str, directory: str, name: str):
        self.log_path = os.path.join(directory, f"{name}.log")
        self.notify = NotifyListener(short_tempdir("msc-nfy-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MADSIDECAR_")}
        env.update(NOTIFY_SOCKET=self.notify.path, PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "madsidecar", "run", "--redis-url", redis_url]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", self.LAUNCH, str(listener.fileno()), *command],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(listener.fileno(),),
                cwd=directory,
            )

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def wait_ready(self) -> None:
        try:
            self.notify.wait_for("READY=1")
        except TimeoutError:
            raise AssertionError(f"sidecar not ready; log:\n{self.log()}") from None

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(START_TIMEOUT_S)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.notify.close()
        shutil.rmtree(os.path.dirname(self.notify.path), ignore_errors=True)


def test_restart_keeps_the_activated_socket(redis_server: RedisProcess, workdir: str) -> None:
    """What `systemctl restart madsidecar.service` relies on: the sidecar neither unlinks
    nor shuts down the socket it was handed, so a client that connects while no sidecar
    runs is queued by the kernel and served by the next one."""
    path = os.path.join(workdir, "madsidecar.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sidecars: list[ActivatedSidecar] = []
    try:
        first = ActivatedSidecar(listener, redis_server.url, workdir, "first")
        sidecars.append(first)
        first.wait_ready()
        with BlockingClient(path, timeout=START_TIMEOUT_S) as client:
            assert client.ping() == "pong"
        assert first.terminate() == 0, first.log()
        assert os.path.exists(path)

        # Nobody serves the socket now; connecting must still succeed.
        waiting = BlockingClient(path, timeout=START_TIMEOUT_S, reconnect=False)
        with waiting:
            second = ActivatedSidecar(listener, redis_server.url, workdir, "second")
            sidecars.append(second)
            assert waiting.ping() == "pong"
        # Not SIGTERM before READY=1: a stop while the first Redis connect completes can
        # hang RedisGateway.close() (asyncio.wait_for swallows the cancel on 3.11).
        second.wait_ready()
        assert second.terminate() == 0, second.log()
        for sidecar in sidecars:
            assert ACTIVATED_LOG.search(sidecar.log()), sidecar.log()
    finally:
        for sidecar in sidecars:
            sidecar.close()
        listener.close()


# -- the unit's seccomp sandbox --------------------------------------------------------

SECCOMP_APPLY = r"""
import ctypes, json, os, sys

spec = json.loads(sys.argv[1])
lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_load.argtypes = [ctypes.c_void_p]


class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


lib.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
ALLOW, KILL_PROCESS = 0x7FFF0000, 0x80000000
CMP_LT, CMP_EQ, CMP_GT, CMP_MASKED_EQ = 2, 4, 6, 7


def errno_action(number):
    return 0x00050000 | number


def rule(ctx, action, name, *cmps):
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number == -1:  # unknown to libseccomp; systemd skips these too
        return
    array = (Cmp * len(cmps))(*(Cmp(*c) for c in cmps))
    rc = lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array)
    if rc < 0:
        raise OSError(-rc, f"seccomp rule for {name}")


def load(ctx):
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, "seccomp_load")


# MemoryDenyWriteExecute=yes, as systemd's seccomp_memory_deny_write_execute() does it.
if spec["mdwe"]:
    ctx = lib.seccomp_init(ALLOW)
    eperm = errno_action(1)
    rule(ctx, eperm, "mmap", (2, CMP_MASKED_EQ, 6, 6))  # PROT_WRITE|PROT_EXEC
    rule(ctx, eperm, "mprotect", (2, CMP_MASKED_EQ, 4, 4))  # PROT_EXEC
    rule(ctx, eperm, "pkey_mprotect", (2, CMP_MASKED_EQ, 4, 4))
    rule(ctx, eperm, "shmat", (2, CMP_MASKED_EQ, 0o100000, 0o100000))  # SHM_EXEC
    load(ctx)

# RestrictAddressFamilies= (an allow list), as seccomp_restrict_address_families() does.
families = sorted(spec["families"])
ctx = lib.seccomp_init(ALLOW)
refuse = errno_action(spec["eafnosupport"])
rule(ctx, refuse, "socket", (0, CMP_LT, families[0], 0))
rule(ctx, refuse, "socket", (0, CMP_GT, families[-1], 0))
for family in range(families[0] + 1, families[-1]):
    if family not in families:
        rule(ctx, refuse, "socket", (0, CMP_EQ, family, 0))
load(ctx)

# SystemCallFilter= (an allow list) with SystemCallErrorNumber=; loaded last.
default = KILL_PROCESS if spec["errno"] is None else errno_action(spec["errno"])
ctx = lib.seccomp_init(default)
for name in spec["allow"]:
    rule(ctx, ALLOW, name)
os.umask(int(spec["umask"], 8))
load(ctx)
os.execv(sys.argv[2], sys.argv[2:])
"""


def syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: every @group and its members (names or @groups)."""
    result = subprocess.run(
        [require_binary("systemd-analyze"), "syscall-filter", "--no-pager"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in result.stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#"):
            assert current is not None
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def expand_syscalls(item: str, groups: dict[str, list[str]]) -> set[str]:
    if not item.startswith("@"):
        return {item}
    return {name for member in groups[item] for name in expand_syscalls(member, groups)}


def unit_sandbox_spec() -> dict[str, object]:
    """The seccomp parts of the service's hardening, resolved to syscall names/numbers."""
    service = parse_unit(SERVICE)["Service"]
    groups = syscall_groups()
    filters = service["SystemCallFilter"]
    assert not filters[0].startswith("~"), "expected an allow list first"
    allowed = expand_syscalls("@default", groups)  # systemd adds @default to allow lists
    for value in filters:
        deny = value.startswith("~")
        names = set().union(*(expand_syscalls(i, groups) for i in value.lstrip("~").split()))
        allowed = allowed - names if deny else allowed | names
    (families,) = service["RestrictAddressFamilies"]
    assert not families.startswith("~")
    (error_name,) = service.get("SystemCallErrorNumber", [""]) or [""]
    assert service["MemoryDenyWriteExecute"] == ["yes"]
    assert service["NoNewPrivileges"] == ["yes"]
    return {
        "allow": sorted(allowed),
        "families": [int(getattr(socket, name)) for name in families.split()],
        "eafnosupport": errno.EAFNOSUPPORT,
        "errno": getattr(errno, error_name) if error_name else None,
        "mdwe": True,
        "umask": service["UMask"][0],
    }


def sandboxed(command: list[str], spec: dict[str, object]) -> list[str]:
    return [sys.executable, "-c", SECCOMP_APPLY, json.dumps(spec), *command]


PROBE = r"""
import errno, mmap, os, socket
results = {}
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    results["wx_mmap"] = "allowed"
except OSError as exc:
    results["wx_mmap"] = errno.errorcode[exc.errno]
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW).close()
    results["netlink"] = "allowed"
except OSError as exc:
    results["netlink"] = errno.errorcode[exc.errno]
try:
    os.chroot("/")
    results["chroot"] = "allowed"
except OSError as exc:
    results["chroot"] = errno.errorcode[exc.errno]
socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close()
print(results)
"""


@pytest.fixture(scope="module")
def sandbox_spec() -> dict[str, object]:
    try:
        ctypes.CDLL("libseccomp.so.2")
    except OSError:
        pytest.skip("libseccomp.so.2 is not installed (it comes with systemd)")
    return unit_sandbox_spec()


def test_sandbox_emulation_bites(sandbox_spec: dict[str, object]) -> None:
    """The emulated sandbox is not a no-op: it refuses what the unit forbids."""
    result = subprocess.run(
        sandboxed([sys.executable, "-c", PROBE], sandbox_spec),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(
        {"wx_mmap": "EPERM", "netlink": "EAFNOSUPPORT", "chroot": "EPERM"}
    )


class SandboxedSidecar(SidecarProcess):
    def __init__(self, spec: dict[str, object]) -> None:
        super().__init__(None)  # embedded Redis: redis-server runs inside the sandbox too
        self.spec = spec
        self.env = {"MADSIDECAR_EMBEDDED_DIR": os.path.join(self.dir, "redis")}

    def command(self) -> list[str]:
        return sandboxed(super().command(), self.spec)


def seccomp_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Seccomp", "Seccomp_filters", "NoNewPrivs"):
            fields[key] = value.strip()
    return fields


def test_sidecar_runs_under_the_units_seccomp_sandbox(sandbox_spec: dict[str, object]) -> None:
    """MemoryDenyWriteExecute= with CPython, ctypes and uvloop, SystemCallFilter= and
    RestrictAddressFamilies= as the unit sets them: the sidecar starts its embedded
    redis-server, serves, reaches Redis, and drains on SIGTERM with status 0."""
    side = SandboxedSidecar(sandbox_spec)
    try:
        side.start()
        assert seccomp_status(side.pid) == {
            "NoNewPrivs": "1",
            "Seccomp": "2",
            "Seccomp_filters": "3",
        }
        with side.client() as client:
            assert client.ping() == "pong"
            assert client.call("health")["ok"] is True
            stats = client.stats()
            assert stats["redis"]["embedded"] is True
            assert stats["redis"]["connected"] is True
        assert side.terminate() == 0, side.log()
        log = side.log()
        assert "embedded_redis_stopped" in log, log
        assert "level='error'" not in log, log
    finally:
        side.stop()
