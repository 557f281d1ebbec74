"""`./dev bench` must keep working: a quick run measures every row and stops cleanly.

Timings are not judged here (that is what the benchmark's own --check is for); this only
asserts the benchmark runs end to end and reports every figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .support import REPO, short_tempdir


def test_quick_benchmark_reports_every_row_and_target() -> None:
    output = os.path.join(short_tempdir(), "bench.json")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", output],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    with open(output) as fh:
        report = json.load(fh)
    rows = report["results"]
    assert {row["server"] for row in rows.values()} == {"echo", "sidecar", "redis"}
    for key, row in rows.items():
        figure = row.get("p50_us") or row.get("msgs_per_s")
        assert figure and figure > 0, key
    assert report["targets"] and all("met" in target for target in report["targets"])
    measured = {key.partition("@")[0] for key in rows}
    assert {"sdk_python", "sdk_rust", "sdk_go", "sdk_node"} <= measured, "every SDK's ping"
    assert report["sidecar_exit_status"] == 0, "the sidecar drained and exited cleanly"
    assert "ratio" in result.stdout
