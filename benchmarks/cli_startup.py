"""CLI start-up benchmark: how long `tltf --help` takes next to importing TensorFlow.

Each command runs in a fresh interpreter, several times; the table gives the minimum and
the median wall time and the ratio of each median to `import tensorflow`. `tltf --help` and
`tltf <command> --help` import no TensorFlow, so they should take a small fraction of it.

Run (about a minute on 2 shared CPU cores):

    .venv/bin/python benchmarks/cli_startup.py
    .venv/bin/python benchmarks/cli_startup.py --runs 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "tltf --help": ["-m", "tltf.cli", "--help"],
    "tltf train --help": ["-m", "tltf.cli", "train", "--help"],
    "import tensorflow": ["-c", "import tensorflow"],
}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command")
    return parser.parse_args()


def time_command(args: list[str], runs: int) -> list[float]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, *args], cwd=ROOT, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    args = parse_args()
    results = {name: time_command(argv, args.runs) for name, argv in COMMANDS.items()}
    baseline = statistics.median(results["import tensorflow"])
    print(f"| command | min (s) | median (s) | median / import tensorflow |  ({args.runs} runs)")
    print("|---|---:|---:|---:|")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"| `{name}` | {min(times):.3f} | {median:.3f} | {median / baseline:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
