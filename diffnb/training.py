"""The training loop: many optimiser steps fused by ``lax.scan`` inside one jitted call.

``train`` runs ``num_steps`` steps of an optax optimiser on ``loss_fn(params, key, batch)``.
Steps are grouped in chunks of ``steps_per_chunk``; each chunk is one call of a jitted
function whose body is a ``lax.scan`` over its steps, so Python runs once per chunk, not once
per step (Dirmeier's (2023) un-jitted Python loop ran about 30 times slower).

Mini-batches: every epoch draws a fresh permutation of the n data points and cuts it into
``n // batch_size`` batches; the last ``n % batch_size`` points of that permutation are left
out of that epoch only, so every point is used about equally often over training.

Randomness: the key is split once into a shuffling key and a step key; epoch e uses
``fold_in(key_shuffle, e)`` and step s uses ``fold_in(key_step, s)``. The same key and
arguments give bit-identical results, however the steps are chunked.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffnb._checks import check_positive_int, check_samples

__all__ = ["TrainResult", "NonFiniteLossError", "default_optimizer", "train"]


class TrainResult(NamedTuple):
    """What ``train`` returns.

    Attributes:
      params: the parameters after the last step.
      ema_params: their exponential moving average, or None when ``ema_decay`` is None.
      losses: (num_steps,) the mini-batch loss of each step, evaluated before its update.
    """

    params: Any
    ema_params: Any
    losses: jax.Array


class NonFiniteLossError(FloatingPointError):
    """A step produced a NaN or inf loss or gradient; training stopped there.

    Attributes:
      step: the 0-based index of the first bad step.
      last_finite_params: the parameters that step was evaluated at, i.e. the result of
        steps 0..step-1, all finite.
      last_finite_ema_params: the EMA at the same point (None without EMA).
      losses: (step,) the finite losses of the steps before it.
    """

    def __init__(self, step, last_finite_params, last_finite_ema_params, losses):
        super().__init__(
            f"non-finite loss or gradient at step {step}; training stopped, and the last "
            "finite parameters are in this error's `last_finite_params`"
        )
        self.step = step
        self.last_finite_params = last_finite_params
        self.last_finite_ema_params = last_finite_ema_params
        self.losses = losses


@functools.lru_cache(maxsize=32)
def default_optimizer(
    num_steps: int,
    learning_rate: float = 2e-3,
    warmup_steps: int | None = None,
    final_learning_rate: float = 2e-5,
    weight_decay: float = 1e-4,
) -> optax.GradientTransformation:
    """AdamW (Loshchilov & Hutter 2019) with linear warm-up and cosine decay.

    The learning rate rises linearly from 0 to ``learning_rate`` over ``warmup_steps``
    (default: 5% of the steps, at most 500), then decays along a half cosine to
    ``final_learning_rate`` at ``num_steps``. The decay removes most of the parameter noise
    that a constant rate leaves in the last iterate. Cached: the same arguments give the same
    object, so repeated ``train`` calls with the same loss reuse the compiled steps.
    """
    num_steps = check_positive_int(num_steps, "num_steps")
    if warmup_steps is None:
        warmup_steps = min(500, num_steps // 20)
    if not 0 <= warmup_steps < num_steps:
        raise ValueError(f"warmup_steps must be in [0, num_steps), got {warmup_steps}")
    if not 0 < final_learning_rate <= learning_rate:
        raise ValueError(
            f"final_learning_rate must be in (0, learning_rate], got {final_learning_rate}"
        )
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        decay_steps=num_steps,
        end_value=final_learning_rate,
    )
    return optax.adamw(schedule, weight_decay=weight_decay)


def _global_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(tree)]))


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "optimizer", "ema_decay", "batch_size", "length")
)
def _run_chunk(state, data, keys, step0, *, loss_fn, optimizer, ema_decay, batch_size, length):
    """Steps step0 .. step0 + length - 1 in one ``lax.scan``; returns (state, (losses, finite)).

    Module-level and keyed on the loss and optimiser objects, so a second ``train`` call with
    the same ones reuses the compiled code.
    """
    key_shuffle, key_step = keys
    n = data.shape[0]
    batches_per_epoch = n // batch_size
    grad_fn = jax.value_and_grad(loss_fn)

    def body(state, inputs):
        params, opt_state, ema = state
        step, rows = inputs
        loss, grads = grad_fn(params, jax.random.fold_in(key_step, step), data[rows])
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if ema is not None:
            ema = jax.tree_util.tree_map(
                lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params
            )
        finite = jnp.isfinite(loss) & _global_finite(grads)
        return (params, opt_state, ema), (loss, finite)

    steps = step0 + jnp.arange(length)
    epoch0 = step0 // batches_per_epoch
    num_epochs = (length - 1) // batches_per_epoch + 2  # epochs a chunk can touch
    perms = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key_shuffle, e), n))(
        epoch0 + jnp.arange(num_epochs)
    )
    which = (steps // batches_per_epoch - epoch0)[:, None]
    cols = (steps % batches_per_epoch)[:, None] * batch_size + jnp.arange(batch_size)[None, :]
    rows = perms[which, cols]  # (length, batch_size) indices into data
    return jax.lax.scan(body, state, (steps, rows))


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    with warnings.catch_warnings():  # no ipywidgets: tqdm.auto warns, then falls back to text
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm(total=total, unit="step", leave=False)


def train(
    key: jax.Array,
    loss_fn,
    params,
    data,
    *,
    num_steps: int,
    batch_size: int,
    optimizer: optax.GradientTransformation | None = None,
    ema_decay: float | None = None,
    steps_per_chunk: int = 500,
    progress: bool | None = None,
) -> TrainResult:
    """Minimise ``loss_fn(params, key, batch)`` over mini-batches of ``data``.

    Args:
      key: PRNG key; it decides the shuffling and every key given to ``loss_fn``.
      loss_fn: a pure loss, e.g. from ``diffnb.losses``.
      params: initial parameters (a pytree).
      data: (n, d) finite training points.
      num_steps: number of optimiser steps, >= 1.
      batch_size: mini-batch size, 1 <= batch_size <= n.
      optimizer: an optax transformation; default ``default_optimizer(num_steps)``.
      ema_decay: if given, in [0, 1): also keep ema <- decay * ema + (1 - decay) * params.
      steps_per_chunk: steps fused in one jitted ``lax.scan`` call.
      progress: show a ``tqdm.auto`` bar over chunks; default: when there are several chunks.

    Returns:
      ``TrainResult(params, ema_params, losses)``.

    Raises:
      ValueError: naming the bad argument.
      NonFiniteLossError: at the first step with a NaN or inf loss or gradient; the error
        carries ``step`` and ``last_finite_params`` (see its docstring).
    """
    data = check_samples(data, "data")
    num_steps = check_positive_int(num_steps, "num_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    steps_per_chunk = check_positive_int(steps_per_chunk, "steps_per_chunk")
    n = data.shape[0]
    if batch_size > n:
        raise ValueError(
            f"batch_size must be at most the number of data points {n}, got {batch_size}"
        )
    if ema_decay is not None and not (0.0 <= ema_decay < 1.0 and math.isfinite(ema_decay)):
        raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay}")
    if optimizer is None:
        optimizer = default_optimizer(num_steps)

    keys = tuple(jax.random.split(key))  # (key_shuffle, key_step)
    static = {"loss_fn": loss_fn, "optimizer": optimizer, "ema_decay": ema_decay,
              "batch_size": batch_size}  # fmt: skip

    def chunk(state, start, length):
        return _run_chunk(state, data, keys, start, length=length, **static)

    ema = None if ema_decay is None else jax.tree_util.tree_map(jnp.asarray, params)
    state = (params, optimizer.init(params), ema)

    bounds = list(range(0, num_steps, steps_per_chunk)) + [num_steps]
    bar = _progress_bar(num_steps, len(bounds) > 2 if progress is None else progress)
    losses = []
    try:
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            new_state, (chunk_losses, finite) = chunk(state, start, stop - start)
            finite = np.asarray(finite)
            if not finite.all():
                bad = int(np.argmin(finite))  # first bad step within the chunk
                if bad > 0:  # replay the good steps from the chunk's start
                    state, (good, _) = chunk(state, start, bad)
                    losses.append(good)
                raise NonFiniteLossError(
                    start + bad,
                    state[0],
                    state[2],
                    jnp.concatenate(losses) if losses else jnp.zeros((0,), chunk_losses.dtype),
                )
            state = new_state
            losses.append(chunk_losses)
            if bar is not None:
                bar.update(stop - start)
                bar.set_postfix(loss=f"{float(jnp.mean(chunk_losses)):.4g}")
    finally:
        if bar is not None:
            bar.close()
    params, _, ema = state
    return TrainResult(params, ema, jnp.concatenate(losses))
