"""The libFuzzer target of the frame decoder, on a CI budget: a short coverage-guided run
from the seed corpus must find nothing. `./dev fuzz [SECONDS]` runs it for longer."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from .support import REPO

CI_SECONDS = 20


def test_a_short_fuzz_run_of_the_frame_decoder_finds_nothing(tmp_path: Path) -> None:
    work = tmp_path / "corpus"
    work.mkdir()
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "fuzz" / "frame_decoder.py"),
            f"-max_total_time={CI_SECONDS}",
            f"-dict={REPO / 'fuzz' / 'msgpack.dict'}",
            f"-artifact_prefix={tmp_path}/",
            "-print_final_stats=1",
            str(work),
            str(REPO / "fuzz" / "corpus"),
        ],
        capture_output=True,
        text=True,
        timeout=CI_SECONDS + 120,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    executed = re.search(r"stat::number_of_executed_units: *(\d+)", run.stderr)
    assert executed is not None, run.stderr[-4000:]
    # The seed corpus alone is 36 inputs; a working target gets through thousands.
    assert int(executed.group(1)) > 1000, run.stderr[-4000:]
    coverage = re.findall(r"\bcov: (\d+)", run.stderr)
    assert coverage and int(coverage[-1]) > 50, "the decoder's source is instrumented"
    assert not list(tmp_path.glob("crash-*")), "no crash artifact"
