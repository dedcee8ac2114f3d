"""Three ways to train the score MLP in JAX, timed on the same loss, optimiser and batch.

- ``python_loop``: Dirmeier's (2023) way, the step not jitted, one Python iteration per step;
- ``diffnb_train``: ``diffnb.training.train`` as notebooks/ncsn.md calls it (NCSN loss,
  default AdamW with warm-up and cosine decay, EMA 0.999);
- ``pure_jax``: a hand-written MLP of the same shapes, the same loss and optimiser, in one
  ``lax.scan`` per chunk: the reference with no library overhead.

Each returns steps per second measured after a warm-up call that compiles. Import this
module only after the process's CPU affinity is set (see benchmarks/speed.py).
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from diffnb import data, losses, networks, schedules, training
from diffnb.sde import VESDE

# The NCSN chapter's ladder (notebooks/ncsn.md): 20 levels from 1 down to 0.01.
SIGMA_MIN, SIGMA_MAX, NUM_LEVELS = 0.01, 1.0, 20
EMA_DECAY = 0.999


class Setup(NamedTuple):
    config: networks.NetworkConfig
    net: object  # hk.Transformed
    params: object
    loss_fn: object
    schedule: schedules.NCSNSchedule
    sde: VESDE
    data: jax.Array


def make_setup(key: jax.Array, num_points: int) -> Setup:
    """The chapter's objects: default network, NCSN loss on the VE ladder, nine Gaussians."""
    key_data, key_init = jax.random.split(key)
    config = networks.NetworkConfig()
    net = networks.score_network(config)
    sde = VESDE(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    schedule = schedules.ncsn_from_ve(sde, NUM_LEVELS)
    x = data.sample(key_data, data.nine_gaussians(), num_points)
    params = net.init(key_init, x[:2], jnp.zeros(2))
    loss_fn = losses.ncsn_loss(networks.ncsn_score_model(net.apply), schedule)
    return Setup(config, net, params, loss_fn, schedule, sde, x)


def _block(tree):
    return jax.block_until_ready(tree)


def python_loop(key: jax.Array, setup: Setup, num_steps: int, batch_size: int) -> float:
    """Steps/s of an un-jitted value_and_grad + AdamW step called from a Python loop."""
    optimizer = training.default_optimizer(max(num_steps, 20))
    grad_fn = jax.value_and_grad(setup.loss_fn)
    params, opt_state = setup.params, optimizer.init(setup.params)
    n = setup.data.shape[0]

    def run(params, opt_state, steps):
        total = 0.0
        for s in range(steps):
            start = (s * batch_size) % (n - batch_size + 1)
            batch = jax.lax.dynamic_slice_in_dim(setup.data, start, batch_size)
            loss, grads = grad_fn(params, jax.random.fold_in(key, s), batch)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            total = total + loss
        return _block((params, opt_state, total))

    params, opt_state, _ = run(params, opt_state, 3)  # warm the per-primitive caches
    start = time.perf_counter()
    run(params, opt_state, num_steps)
    return num_steps / (time.perf_counter() - start)


def best_time(fn, repeats: int) -> tuple[float, object]:
    """The shortest wall time of ``repeats`` calls of ``fn()`` (after one warm-up call)."""
    out = fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def diffnb_train(
    key: jax.Array,
    setup: Setup,
    num_steps: int,
    batch_size: int,
    steps_per_chunk: int,
    repeats: int = 1,
) -> tuple[float, training.TrainResult]:
    """Best steps/s of ``training.train`` over ``repeats`` calls after a compiling one."""

    def call():
        return _block(
            training.train(
                key, setup.loss_fn, setup.params, setup.data, num_steps=num_steps,
                batch_size=batch_size, ema_decay=EMA_DECAY, steps_per_chunk=steps_per_chunk,
                progress=False,
            )
        )  # fmt: skip

    seconds, result = best_time(call, repeats)  # later calls reuse the compiled chunk
    return num_steps / seconds, result


# ---------------------------------------------------------------------------------------------
# The reference: the same MLP written by hand.


def _dense(key, fan_in, fan_out):
    w = jax.random.truncated_normal(key, -2.0, 2.0, (fan_in, fan_out)) / math.sqrt(fan_in)
    return {"w": w, "b": jnp.zeros(fan_out)}


def init_mlp(key: jax.Array, config: networks.NetworkConfig) -> dict:
    """Parameters of the hand-written MLP, same shapes as ``networks.score_network(config)``."""
    e, widths = config.embedding_dim, (config.embedding_dim, *config.hidden_dims)
    keys = jax.random.split(key, 3 + len(config.hidden_dims))
    params = {"x_in": _dense(keys[0], config.output_dim, e), "c_in": _dense(keys[1], e, e)}
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        params[f"hidden_{k}"] = _dense(keys[2 + k], a, b)
    params["norm"] = {"scale": jnp.ones(widths[-1]), "offset": jnp.zeros(widths[-1])}
    params["out"] = _dense(keys[-1], widths[-1], config.output_dim)
    return params


def mlp(params: dict, config: networks.NetworkConfig, x: jax.Array, c: jax.Array) -> jax.Array:
    """out = W_o LN(GELU(W_k ... (W_x x + b_x + GELU(W_e emb(c) + b_e)))) + b_o, by hand."""
    half = config.embedding_dim // 2
    freqs = jnp.exp(-math.log(config.max_positions) / (half - 1) * jnp.arange(half))
    angles = c[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)

    def dense(name, h):
        return h @ params[name]["w"] + params[name]["b"][None, :]

    h = dense("x_in", x) + jax.nn.gelu(dense("c_in", emb))
    for k in range(len(config.hidden_dims)):
        h = jax.nn.gelu(dense(f"hidden_{k}", h))
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.var(h, axis=-1, keepdims=True)
    norm = params["norm"]
    h = (h - mean) * jax.lax.rsqrt(var + 1e-5) * norm["scale"][None, :] + norm["offset"][None, :]
    return dense("out", h)


def reference_loss(params, config, sigmas, key, batch):
    """1/2 E || sigma net(x + sigma z, log sigma) / sigma + z ||^2, the NCSN loss written out."""
    key_level, key_noise = jax.random.split(key)
    sigma = sigmas[jax.random.randint(key_level, batch.shape[:1], 0, sigmas.shape[0])]
    z = jax.random.normal(key_noise, batch.shape)
    out = mlp(params, config, batch + sigma[:, None] * z, jnp.log(sigma))
    return 0.5 * jnp.mean(jnp.sum(jnp.square(out + z), axis=-1))


def pure_jax(
    key: jax.Array,
    setup: Setup,
    num_steps: int,
    batch_size: int,
    steps_per_chunk: int,
    repeats: int = 1,
) -> float:
    """Steps/s of the hand-written MLP trained in ``lax.scan`` chunks, doing the library's work.

    Like ``training.train``: AdamW and the EMA, mini-batches cut from a fresh permutation of
    the data every epoch, and a finiteness flag of the loss and of every gradient per step, so
    that ``ratio_vs_pure_jax`` measures the library's overhead alone.
    """
    config, x = setup.config, setup.data
    sigmas = jnp.asarray(setup.schedule.sigmas)
    optimizer = training.default_optimizer(num_steps)
    grad_fn = jax.value_and_grad(reference_loss)
    n = x.shape[0]
    per_epoch = n // batch_size
    key_shuffle, key_loss = jax.random.split(key)

    @functools.partial(jax.jit, static_argnames="length")
    def chunk(state, step0, length):
        steps = step0 + jnp.arange(length)
        epoch0 = step0 // per_epoch
        epochs = epoch0 + jnp.arange((length - 1) // per_epoch + 2)
        perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key_shuffle, e), n))(
            epochs
        )
        cols = (steps % per_epoch)[:, None] * batch_size + jnp.arange(batch_size)[None, :]
        rows = perms[(steps // per_epoch - epoch0)[:, None], cols]

        def body(state, inputs):
            params, opt_state, ema = state
            step, batch_rows = inputs
            loss, grads = grad_fn(
                params, config, sigmas, jax.random.fold_in(key_loss, step), x[batch_rows]
            )
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            ema = jax.tree_util.tree_map(
                lambda e, p: EMA_DECAY * e + (1.0 - EMA_DECAY) * p, ema, params
            )
            finite = jnp.isfinite(loss)
            for g in jax.tree_util.tree_leaves(grads):
                finite = finite & jnp.all(jnp.isfinite(g))
            return (params, opt_state, ema), (loss, finite)

        return jax.lax.scan(body, state, (steps, rows))

    params = init_mlp(key, config)
    bounds = [*range(0, num_steps, steps_per_chunk), num_steps]

    def run():
        state = (params, optimizer.init(params), params)
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            state, (_, finite) = chunk(state, start, stop - start)
            assert bool(finite.all())  # the library reads the flags back every chunk too
        return _block(state)

    return num_steps / best_time(run, repeats)[0]


def one_step_fn(setup: Setup, batch_size: int):
    """(fn, args) of one diffnb training step (loss, gradient, AdamW) for XLA's FLOP count."""
    optimizer = training.default_optimizer(1000)
    grad_fn = jax.value_and_grad(setup.loss_fn)

    def step(params, opt_state, key, batch):
        loss, grads = grad_fn(params, key, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    args = (setup.params, optimizer.init(setup.params), jax.random.key(0),
            setup.data[:batch_size])  # fmt: skip
    return step, args


def matmul_gflops(key: jax.Array, size: int = 1024, repeats: int = 20) -> float:
    """Best GFLOP/s of a jitted (size, size) float32 matmul: 2 size^3 FLOPs per call."""
    key_a, key_b = jax.random.split(key)
    a = jax.random.normal(key_a, (size, size), jnp.float32)
    b = jax.random.normal(key_b, (size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    _block(matmul(a, b))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        _block(matmul(a, b))
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9
