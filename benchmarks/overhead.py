"""Where diffnb's training step loses time against the hand-written reference.

    python benchmarks/overhead.py [--cpus 1] [--rounds 6]

Times one 500-step chunk of four scans that differ in one thing each, interleaved round by
round (best of ``--rounds``), at batch 64:

  A  diffnb.training._run_chunk, data of 50,000 points (the NCSN chapter's size);
  B  the same with 2,048 points: A - B is the cost of the per-chunk epoch permutations;
  C  a bare scan (random rows, AdamW, EMA) around diffnb's ncsn_loss and Haiku network;
  D  C plus diffnb's per-step finiteness check of every gradient: D - C is its cost;
  E  the bare scan around the hand-written MLP (benchmarks/training_jax.py): C - E is the
     cost of Haiku and of diffnb's loss.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LENGTH, BATCH = 500, 64


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--cpus", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    if args.cpus:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cpus])
    import jax
    import jax.numpy as jnp
    import optax

    from benchmarks import training_jax
    from diffnb import training

    setup = training_jax.make_setup(jax.random.key(0), 50_000)
    optimizer = training.default_optimizer(4000)
    state = (setup.params, optimizer.init(setup.params), setup.params)
    keys = tuple(jax.random.split(jax.random.key(1)))
    sigmas = jnp.asarray(setup.schedule.sigmas)
    small = setup.data[:2048]

    def diffnb_chunk(x):
        return lambda: training._run_chunk(
            state, x, keys, 0, loss_fn=setup.loss_fn, optimizer=optimizer,
            ema_decay=training_jax.EMA_DECAY, batch_size=BATCH, length=LENGTH)  # fmt: skip

    def bare_chunk(loss_fn, check_grads):
        grad_fn = jax.value_and_grad(loss_fn)

        @jax.jit
        def chunk(state, step_keys):
            def body(state, key_step):
                params, opt_state, ema = state
                key_rows, key_loss = jax.random.split(key_step)
                batch = small[jax.random.randint(key_rows, (BATCH,), 0, small.shape[0])]
                loss, grads = grad_fn(params, key_loss, batch)
                updates, opt_state = optimizer.update(grads, opt_state, params)
                params = optax.apply_updates(params, updates)
                ema = jax.tree_util.tree_map(
                    lambda e, p: training_jax.EMA_DECAY * e + (1 - training_jax.EMA_DECAY) * p,
                    ema, params)  # fmt: skip
                finite = jnp.isfinite(loss)
                if check_grads:
                    finite = finite & training._global_finite(grads)
                return (params, opt_state, ema), (loss, finite)

            return jax.lax.scan(body, state, step_keys)

        step_keys = jax.random.split(jax.random.key(2), LENGTH)
        return lambda: chunk(state, step_keys)

    def ref_loss(params, key, batch):
        return training_jax.reference_loss(params, setup.config, sigmas, key, batch)

    variants = {
        "A diffnb _run_chunk, n = 50,000": diffnb_chunk(setup.data),
        "B diffnb _run_chunk, n = 2,048": diffnb_chunk(small),
        "C bare scan, diffnb loss + Haiku": bare_chunk(setup.loss_fn, False),
        "D C + gradient finiteness check": bare_chunk(setup.loss_fn, True),
        "E bare scan, hand-written MLP": bare_chunk(ref_loss, False),
    }
    best = {}
    for fn in variants.values():
        jax.block_until_ready(fn())
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - start)
    print(
        f"cores {sorted(os.sched_getaffinity(0))}, load {os.getloadavg()[0]:.2f}; "
        f"{LENGTH} steps per chunk, batch {BATCH}, best of {args.rounds}"
    )
    ref = best["E bare scan, hand-written MLP"]
    for name, seconds in best.items():
        print(f"| {name:<34} | {LENGTH / seconds:7.0f} steps/s | {ref / seconds:.3f} of E |")


if __name__ == "__main__":
    main()
