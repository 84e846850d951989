"""Import time of `seed_hf` against its floor (torch + transformers + `AutoConfig`), and `seed-hf --help`.

Each figure is the median wall time of fresh interpreter processes, the measurements interleaved so that a busy
machine slows both sides alike. Prints figures only (no pass/fail); the aim is a ratio <= 1.25 and a help
under a second.

    python benchmarks/import_time.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

STATEMENTS = {
    "baseline": "import torch, transformers; from transformers import AutoConfig",
    "seed_hf": "import seed_hf",
    # what a user pays on first use: registration imports seed-hf's configurations (LLaMA's, BLIP-2's)
    "seed_hf + AutoConfig": "import seed_hf, torch, transformers; from transformers import AutoConfig",
    "seed-hf --help": "from seed_hf.cli import main; main(['--help'])",
    # the share of the above that is transformers' own import of LLaMA's configuration (SeedLlamaConfig extends it)
    "baseline + LlamaConfig": "import torch, transformers; from transformers import AutoConfig, LlamaConfig",
}


def wall_time(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="processes per statement (at least 5)")
    args = parser.parse_args()
    if args.repeats < 5:
        parser.error(f"--repeats must be at least 5, got {args.repeats}")
    for statement in STATEMENTS.values():  # warm the file cache: a session's first import reads from disk
        wall_time(statement)
    times: dict[str, list[float]] = {name: [] for name in STATEMENTS}
    for _ in range(args.repeats):
        for name, statement in STATEMENTS.items():
            times[name].append(wall_time(statement))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, statement in STATEMENTS.items():
        print(f"{name:16s} {medians[name]:6.2f} s  (median of {args.repeats})  {statement}")
    print(f"ratio seed_hf / baseline: {medians['seed_hf'] / medians['baseline']:.2f} (aim: <= 1.25)")
    print(
        f"ratio seed_hf + AutoConfig / baseline: {medians['seed_hf + AutoConfig'] / medians['baseline']:.2f}"
    )
    print(f"seed-hf --help: {medians['seed-hf --help']:.2f} s (aim: < 1 s)")


if __name__ == "__main__":
    main()
