"""Every SDK's ping, measured the same way: a bench program per language, run as a child
process against the same sidecar, printing one JSON line

    {"sdk": ..., "ping_p50_us": ..., "ping_p99_us": ..., "pipelined_per_s": ...}

(sequential pings, then pings on one connection with at most 256 in flight). The Python
SDK's program is `bench/sdk_ping.py`; the others live with their SDKs and are built here
once, optimised, before anything is measured. An SDK whose toolchain is missing or whose
build fails is reported and left out; the run goes on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .procs import REPO

BUILD_TIMEOUT_S = 600.0
RUN_TIMEOUT_S = 120.0
FIELDS = ("ping_p50_us", "ping_p99_us", "pipelined_per_s")
LANGUAGES = ("python", "rust", "go", "node")


@dataclass(frozen=True)
class SdkBench:
    sdk: str
    argv: tuple[str, ...]  # the built program; --pings N --pipelined N follow
    cwd: Path

    def run(self, socket_path: str, pings: int, pipelined: int) -> dict[str, float]:
        done = subprocess.run(
            [*self.argv, "--pings", str(pings), "--pipelined", str(pipelined)],
            cwd=self.cwd,
            env={**os.environ, "MADSIDECAR_SOCKET": socket_path},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.sdk} bench exited {done.returncode}: {done.stderr[-800:]}")
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"{self.sdk} bench printed no JSON line: {done.stdout[-800:]}")
        figures = json.loads(lines[-1])
        missing = [name for name in FIELDS if name not in figures]
        if missing:
            raise RuntimeError(f"{self.sdk} bench printed no {missing}: {lines[-1]}")
        return {name: float(figures[name]) for name in FIELDS}


def build_all(progress: Callable[[str], None]) -> list[SdkBench]:
    """The Python program plus every other SDK's that builds here."""
    benches = [SdkBench("python", (sys.executable, str(REPO / "bench" / "sdk_ping.py")), REPO)]
    for builder in (_build_rust, _build_go, _build_node):
        try:
            bench = builder()
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            progress(f"SDK bench left out: {exc}")
            continue
        progress(f"built the {bench.sdk} SDK's bench program")
        benches.append(bench)
    return benches


def _build(sdk: str, tool: str, argv: list[str], cwd: Path) -> None:
    if shutil.which(tool) is None:
        raise RuntimeError(f"{sdk}: {tool} is not installed")
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    if done.returncode != 0:
        raise RuntimeError(f"{sdk}: {' '.join(argv)} failed: {done.stderr[-800:]}")


def _build_rust() -> SdkBench:
    cwd = REPO / "clients" / "rust"
    _build("rust", "cargo", ["cargo", "build", "--quiet", "--release", "--example", "bench"], cwd)
    return SdkBench("rust", (str(cwd / "target" / "release" / "examples" / "bench"),), cwd)


def _build_go() -> SdkBench:
    cwd = REPO / "clients" / "go"
    binary = Path(tempfile.mkdtemp(prefix="msc-bench-go-")) / "bench"
    _build("go", "go", ["go", "build", "-o", str(binary), "./cmd/bench"], cwd)
    return SdkBench("go", (str(binary),), cwd)


def _build_node() -> SdkBench:
    cwd = REPO / "clients" / "node"
    if not (cwd / "node_modules").is_dir():
        _build("node", "npm", ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd)
    _build("node", "npm", ["npm", "run", "--silent", "build"], cwd)
    return SdkBench("node", ("node", str(cwd / "dist" / "bench.js")), cwd)
