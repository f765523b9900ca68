"""Gradient statistics' peak memory: ``summarize`` over K draws of n parameters, by blocks of
``BLOCK_ELEMENTS`` draws x parameters (as runs do) against one block of all n (the float64 copy of every draw at once
that it replaced), each in a fresh subprocess, side by side. Prints each variant's peak resident memory
above the draws themselves, as a multiple of the draws' size (target: blocks <= 0.5x; one block was about
3x, which put a paper-preset `classify` checkpoint at 13.8 GB).

    python benchmarks/gradstats_memory.py [--draws 500] [--params 400000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = """
import json, resource, sys, torch
from gradbench import gradstats
k, n, one_block = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
draws = torch.randn(k, n, generator=torch.Generator().manual_seed(0))
ref = torch.randn(n, dtype=torch.float64) * 0.01
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
if one_block:
    gradstats.BLOCK_ELEMENTS = k * n
gradstats.summarize(draws, ref)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"extra": after - before}))
"""


def peak(k: int, n: int, one_block: bool) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, str(k), str(n), "1" if one_block else "0"],
                         capture_output=True, text=True, check=True)
    return int(json.loads(out.stdout)["extra"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--params", type=int, default=400_000)
    args = parser.parse_args()
    size = args.draws * args.params * 4
    print(f"K = {args.draws} draws x n = {args.params:,} parameters: the draws take {size / 2**30:.2f} GiB (float32)")
    print(f"{'variant':<34}{'peak above the draws, GiB':>27}{'x draws':>9}")
    for name, one in (("blocks (BLOCK_ELEMENTS)", False), ("one block (all parameters at once)", True)):
        extra = peak(args.draws, args.params, one)
        print(f"{name:<34}{extra / 2**30:>27.2f}{extra / size:>9.2f}")


if __name__ == "__main__":
    main()
