"""`python -m tests.chaos [--seconds N] [--seed S]` (or `./dev chaos N`): one chaos run,
its table on stdout; exit status 1 if any promise was broken."""

from __future__ import annotations

import argparse
import sys

from .run import render, run_chaos


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=600, help="length of the run (600)")
    parser.add_argument("--seed", type=int, help="replay a run's choices of faults")
    args = parser.parse_args()
    run, verdict = run_chaos(args.seconds, args.seed, progress=lambda line: print(line, flush=True))
    print(render(run, verdict, args.seconds))
    return 1 if verdict.broken_count else 0


if __name__ == "__main__":
    sys.exit(main())
