"""Training and sampling speed of diffnb against Dirmeier's (2023) loop, PyTorch and the machine.

    python benchmarks/speed.py            # the full run behind `make bench`
    python benchmarks/speed.py --tiny     # a seconds-long smoke run (tests/test_bench.py)

Training, the chapters' score MLP at batch 64 (steps per second and model GFLOP/s):
  1. loop    Dirmeier's (2023) way: the step not jitted, a Python loop;
  2. diffnb  diffnb.training.train as notebooks/ncsn.md calls it;
  3. pure    a hand-written MLP of the same shapes in the same lax.scan (the reference);
  4. torch   PyTorch eager on the CPU, same network, AdamW and batch;
  5. matmul  a 1024^2 float32 matmul in the same process, the FLOP-rate ceiling.
Sampling 1000 points: PF-ODE with an un-jitted vs diffnb's jitted field (seconds, NFE),
annealed Langevin and ancestral sampling (seconds).

The last line printed is ``key=value`` figures: speedup_vs_loop (2/1), speedup_vs_torch
(2/4), fraction_of_matmul (2's FLOP/s over 5's), ratio_vs_pure_jax (2/3), ode_speedup
(un-jitted over jitted PF-ODE seconds). Training rates are the best of ``--repeats`` timed
calls after a warm-up call that compiles (the un-jitted loop: one timed run); samplers are
timed once after a compiling call. The load average is printed: on a shared machine every
rate scales with the share of the CPU the process gets.

With ``--cpus k`` the process pins itself to k cores before JAX starts (XLA sizes its thread
pool at start-up); the default, 0, leaves the affinity alone. On the idle 2-core machine of
November 2026 both cores beat one for diffnb's training (1028 against 835 steps/s), so no
pinning is the default. XLA_FLAGS from the environment apply and are printed;
benchmarks/sweep.py compares cores, flags and chunk sizes.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FULL = {
    "train_steps": 2000,
    "loop_steps": 200,
    "torch_steps": 400,
    "repeats": 3,
    "sample_n": 1000,
    "steps_per_level": 100,
    "chunk": 500,
    "data_points": 50_000,
}
TINY = {
    "train_steps": 40,
    "loop_steps": 4,
    "torch_steps": 10,
    "repeats": 1,
    "sample_n": 16,
    "steps_per_level": 2,
    "chunk": 20,
    "data_points": 2000,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="smoke-test sizes (seconds)")
    parser.add_argument(
        "--cpus", type=int, default=0, help="pin to this many cores (0: leave the affinity alone)"
    )
    parser.add_argument(
        "--only",
        choices=("all", "train"),
        default="all",
        help="'train': diffnb and the reference only (for sweeps)",
    )
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch row")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    for name, value in FULL.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=None,
            help=f"default {value} ({TINY[name]} with --tiny)",
        )
    args = parser.parse_args(argv)
    sizes = TINY if args.tiny else FULL
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    if args.cpus < 0:
        raise SystemExit("--cpus must be >= 0")
    return args


def pin(cpus: int) -> list[int]:
    """Restrict this process to the first ``cpus`` cores it may use (0: all); return them."""
    allowed = sorted(os.sched_getaffinity(0))
    if cpus:
        if cpus > len(allowed):
            raise SystemExit(f"--cpus {cpus}: only {len(allowed)} cores available")
        os.sched_setaffinity(0, allowed[:cpus])
    return sorted(os.sched_getaffinity(0))


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def row(name: str, what: str, value: str, note: str = "") -> str:
    return f"| {name:<38} | {what:<8} | {value:>9} | {note}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    cores = pin(args.cpus)  # before jax is imported
    import jax

    from benchmarks import flops, training_jax

    load_start = load()
    key = jax.random.key(args.seed)
    key_setup, key_loop, key_train, key_ref, key_mm, key_sample = jax.random.split(key, 6)
    setup = training_jax.make_setup(key_setup, args.data_points)
    b = args.batch_size
    hand = flops.hand_step_flops(setup.config, b)
    step_fn, step_args = training_jax.one_step_fn(setup, b)
    xla = flops.xla_flops(step_fn, *step_args)
    from diffnb.networks import num_params

    print(f"machine: {machine()}; pinned to cores {cores}; jax {jax.__version__}")
    print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; load average at start {load_start}")
    print(
        f"network: diffnb.networks default, {num_params(setup.params):,} parameters; "
        f"batch {b}; FLOPs per training step: {hand / 1e6:.1f} M by hand (dense layers), "
        f"{xla / 1e6:.1f} M by XLA's cost analysis"
    )
    lines = [row("variant", "measure", "value", "notes"), "|" + "-" * 90]

    diffnb_sps, result = training_jax.diffnb_train(
        key_train, setup, args.train_steps, b, args.chunk, args.repeats
    )
    ref_sps = training_jax.pure_jax(key_ref, setup, args.train_steps, b, args.chunk, args.repeats)
    figures = {"diffnb_sps": diffnb_sps, "pure_sps": ref_sps, "hand_flops": hand, "xla_flops": xla}
    if args.only == "train":
        print(
            f"diffnb_steps_per_s={diffnb_sps:.1f} pure_jax_steps_per_s={ref_sps:.1f} "
            f"ratio_vs_pure_jax={diffnb_sps / ref_sps:.3f} cores={len(cores)} "
            f"chunk={args.chunk} load={load().split()[0]}"
        )
        return figures

    loop_sps = training_jax.python_loop(key_loop, setup, args.loop_steps, b)
    if args.no_torch:
        torch_sps, torch_note = math.nan, "skipped (--no-torch)"
    else:
        try:
            import torch

            from benchmarks.training_torch import torch_steps_per_second
        except ImportError:
            torch_sps, torch_note = math.nan, "torch not installed (pip install '.[bench]')"
        else:
            torch_sps = torch_steps_per_second(
                args.seed,
                jax.device_get(setup.data),
                jax.device_get(setup.schedule.sigmas),
                setup.config,
                args.torch_steps,
                b,
                args.repeats,
            )
            torch_note = f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)"
    mm = training_jax.matmul_gflops(key_mm)

    def gf(sps):
        return f"{sps * hand / 1e9:.1f} GFLOP/s"

    lines += [
        row(
            "1 case study: un-jitted Python loop",
            "steps/s",
            f"{loop_sps:.1f}",
            f"{args.loop_steps} steps; {gf(loop_sps)}",
        ),
        row(
            "2 diffnb.training.train",
            "steps/s",
            f"{diffnb_sps:.1f}",
            f"{args.train_steps} steps, chunks of {args.chunk}, EMA; {gf(diffnb_sps)}",
        ),
        row("3 hand-written MLP, same lax.scan", "steps/s", f"{ref_sps:.1f}", gf(ref_sps)),
        row(
            "4 PyTorch eager (CPU)",
            "steps/s",
            f"{torch_sps:.1f}",
            f"{args.torch_steps} steps; {torch_note}; {gf(torch_sps)}",
        ),
        row("5 1024^2 float32 matmul", "GFLOP/s", f"{mm:.1f}", "the FLOP-rate ceiling"),
    ]

    from benchmarks import sampling

    times = sampling.sampling_times(
        key_sample, setup, result.ema_params, args.sample_n, args.steps_per_level
    )
    names = {
        "ode_unjitted": "PF-ODE, un-jitted field (case study)",
        "ode_jitted": "PF-ODE, diffnb (jitted field)",
        "langevin": "annealed Langevin, diffnb",
        "ancestral": "DDPM ancestral (N = 1000), diffnb",
    }
    for name, (seconds, nfe) in times.items():
        lines.append(
            row(names[name], "seconds", f"{seconds:.3f}", f"{args.sample_n} points, NFE {nfe}")
        )
    print("\n".join(lines))
    print(f"load average at end {load()}")
    final = {
        "speedup_vs_loop": diffnb_sps / loop_sps,
        "speedup_vs_torch": diffnb_sps / torch_sps,
        "fraction_of_matmul": diffnb_sps * hand / 1e9 / mm,
        "ratio_vs_pure_jax": diffnb_sps / ref_sps,
        "ode_speedup": times["ode_unjitted"][0] / times["ode_jitted"][0],
    }
    print(" ".join(f"{k}={v:.3f}" for k, v in final.items()))
    return {**figures, **final}


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"# total {time.perf_counter() - start:.0f} s", file=sys.stderr)
