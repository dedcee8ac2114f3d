"""Search the fastest configuration of diffnb's training: cores x XLA flags x chunk size.

    python benchmarks/sweep.py [--rounds 2] [--train-steps 1000] [--repeats 5]

Each configuration runs ``speed.py --only train`` in a fresh process (affinity and XLA_FLAGS
act only at start-up). Configurations are interleaved round by round, so a change of load
on a shared machine hits all of them alike. Each process reports its best of ``--repeats``
timed calls, and the table shows the best over rounds: the least disturbed measurement.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

SPEED = Path(__file__).resolve().with_name("speed.py")
FLAGS = {
    "none": "",
    "single-thread eigen": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
}


def run(cpus: int, chunk: int, flags: str, train_steps: int, repeats: int) -> dict:
    env = dict(os.environ, XLA_FLAGS=flags)
    cmd = [sys.executable, str(SPEED), "--only", "train", "--cpus", str(cpus), "--chunk",
           str(chunk), "--train-steps", str(train_steps), "--repeats", str(repeats)]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    last = out.strip().splitlines()[-1]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.]+)", last)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpus", type=int, nargs="+", default=[1, 0])
    parser.add_argument("--chunks", type=int, nargs="+", default=[500])
    parser.add_argument("--flags", nargs="+", default=list(FLAGS), choices=list(FLAGS))
    args = parser.parse_args()
    configs = list(itertools.product(args.cpus, args.chunks, args.flags))
    results = {c: [] for c in configs}
    for r in range(args.rounds):
        for cpus, chunk, flag in configs:
            res = run(cpus, chunk, FLAGS[flag], args.train_steps, args.repeats)
            results[(cpus, chunk, flag)].append(res)
            print(f"round {r} cpus={cpus or 'all'} chunk={chunk} flags={flag!r}: {res}", flush=True)
    print("\n| cores | chunk | XLA flags | diffnb steps/s | pure-JAX steps/s | ratio |")
    for (cpus, chunk, flag), rs in results.items():
        ours = max(r["diffnb_steps_per_s"] for r in rs)
        ref = max(r["pure_jax_steps_per_s"] for r in rs)
        print(f"| {cpus or 'all'} | {chunk} | {flag} | {ours:.0f} | {ref:.0f} | {ours / ref:.3f} |")


if __name__ == "__main__":
    main()
