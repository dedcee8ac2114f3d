"""The training loop: many optimiser steps fused by ``lax.scan`` inside one jitted call.

``train`` runs ``num_steps`` steps of an optax optimiser on ``loss_fn(params, key, batch)``.
Steps are grouped in chunks of ``steps_per_chunk``; each chunk is one call of a jitted
function whose body is a ``lax.scan`` over its steps, so Python runs once per chunk, not once
per step (Dirmeier's (2023) un-jitted Python loop ran about 30 times slower).

Mini-batches: every epoch draws a fresh permutation of the n data points and cuts it into
``n // batch_size`` batches; the last ``n % batch_size`` points of that permutation are left
out of that epoch only, so every point is used about equally often over training.

Data: an (n, d) array, or a pytree of arrays that share a leading axis of length n (points
and labels, say); rows are shuffled together and ``loss_fn`` receives the batch as the same
pytree.

Devices: with several local devices, each mini-batch is split over them along a one-axis mesh
(``jax.sharding``; parameters and optimiser state replicated) and XLA sums the gradients
across them. The batch size must then be a multiple of the device count. One device is the
plain path. The losses equal the one-device run's to float round-off (the sums are taken in
another order).

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
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from diffnb._checks import check_positive_int, check_samples

__all__ = [
    "TrainResult",
    "NonFiniteLossError",
    "default_optimizer",
    "ema_decay_at",
    "train",
]


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
      last_finite_params: the parameters at which the last step with a finite loss, step - 1,
        was evaluated (the result of steps 0..step-2); None when step is 0.
      last_finite_ema_params: the EMA at the same point (None without EMA or when step is 0).
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


def ema_decay_at(step, ema_decay: float, warmup: bool):
    """The EMA decay used after step ``step`` (0-based).

    Without warm-up it is ``ema_decay``. With warm-up it is min(ema_decay, (1 + k)/(10 + k)) at
    step k, the rule of TensorFlow's ``ExponentialMovingAverage(num_updates=...)``: the
    average starts by following the parameters closely and forgets its initial value within a
    few hundred steps, so a short run's EMA is not dragged back towards the initialisation.
    """
    if not warmup:
        return ema_decay
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))


_STATIC = ("loss_fn", "optimizer", "ema_decay", "ema_warmup", "batch_size", "length", "mesh")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _run_chunk(
    state, data, keys, step0, *, loss_fn, optimizer, ema_decay, ema_warmup, batch_size, length,
    mesh,
):  # fmt: skip
    """Steps step0 .. step0 + length - 1 in one ``lax.scan``; returns (state, (losses, finite)).

    Module-level and keyed on the loss and optimiser objects, so a second ``train`` call with
    the same ones reuses the compiled code. With a ``mesh``, each batch is constrained to be
    split along its leading axis over the mesh's devices.
    """
    key_shuffle, key_step = keys
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    batches_per_epoch = n // batch_size
    grad_fn = jax.value_and_grad(loss_fn)
    split = None if mesh is None else NamedSharding(mesh, PartitionSpec("batch"))

    def body(state, inputs):
        params, opt_state, ema = state
        step, rows = inputs
        batch = jax.tree_util.tree_map(lambda a: a[rows], data)
        if split is not None:
            batch = jax.lax.with_sharding_constraint(batch, split)
        loss, grads = grad_fn(params, jax.random.fold_in(key_step, step), batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if ema is not None:
            decay = ema_decay_at(step, ema_decay, ema_warmup)
            ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)
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


def _check_data(data):
    """(data, n): an (n, d) float array as ``check_samples`` makes it, or a pytree of arrays
    sharing a leading axis of length n >= 1, floating leaves finite."""
    leaves, treedef = jax.tree_util.tree_flatten(data)
    if treedef.num_leaves == 1 and treedef == jax.tree_util.tree_structure(0):
        x = check_samples(data, "data")
        return x, x.shape[0]
    if not leaves:
        raise ValueError("data must be an array or a pytree of arrays, got an empty pytree")
    leaves = [jnp.asarray(a) for a in leaves]
    shapes = [a.shape for a in leaves]
    if any(a.ndim == 0 for a in leaves) or len({s[0] for s in shapes}) != 1 or shapes[0][0] < 1:
        raise ValueError(f"data's arrays must share a leading axis of length n >= 1, got {shapes}")
    for a in leaves:
        if jnp.issubdtype(a.dtype, jnp.complexfloating) or a.dtype == jnp.bool_:
            raise ValueError(f"data's arrays must be real or integer, got dtype {a.dtype}")
        if jnp.issubdtype(a.dtype, jnp.floating) and not bool(jnp.all(jnp.isfinite(a))):
            raise ValueError(
                f"data contains {int(np.sum(~np.isfinite(np.asarray(a))))} NaN or inf values"
            )
    return jax.tree_util.tree_unflatten(treedef, leaves), shapes[0][0]


def _device_mesh(devices) -> Mesh | None:
    """A one-axis mesh "batch" over ``devices`` (default: every local device); None for one."""
    if devices is None:
        devices = jax.local_devices()
    elif isinstance(devices, int | np.integer):
        count, available = check_positive_int(devices, "devices"), jax.local_devices()
        if count > len(available):
            raise ValueError(
                f"devices must be at most the {len(available)} local devices, got {count}"
            )
        devices = available[:count]
    devices = list(devices)
    if not devices:
        raise ValueError("devices must name at least one device")
    return None if len(devices) == 1 else Mesh(np.array(devices), ("batch",))


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
    ema_warmup: bool = False,
    steps_per_chunk: int = 500,
    devices=None,
    progress: bool | None = None,
) -> TrainResult:
    """Minimise ``loss_fn(params, key, batch)`` over mini-batches of ``data``.

    Args:
      key: PRNG key; it decides the shuffling and every key given to ``loss_fn``.
      loss_fn: a pure loss, e.g. from ``diffnb.losses``.
      params: initial parameters (a pytree).
      data: (n, d) finite training points, or a pytree of arrays with a leading axis of
        length n (e.g. ``(points, labels)``), shuffled together; ``loss_fn`` gets the batch
        in the same structure.
      num_steps: number of optimiser steps, >= 1.
      batch_size: mini-batch size, 1 <= batch_size <= n; a multiple of the device count
        when there are several devices.
      optimizer: an optax transformation; default ``default_optimizer(num_steps)``.
      ema_decay: if given, in [0, 1): also keep ema <- decay * ema + (1 - decay) * params.
      ema_warmup: if True, the decay at step k is min(ema_decay, (1 + k)/(10 + k)) (see
        ``ema_decay_at``); off by default.
      steps_per_chunk: steps fused in one jitted ``lax.scan`` call.
      devices: the devices to split each batch over: None (every local device), a count
        (the first ones), or a sequence of devices. One device is the plain path.
      progress: show a ``tqdm.auto`` bar over chunks; default: when there are several chunks.

    Returns:
      ``TrainResult(params, ema_params, losses)``.

    Raises:
      ValueError: naming the bad argument.
      NonFiniteLossError: at the first step with a NaN or inf loss or gradient; the error
        carries ``step`` and ``last_finite_params`` (see its docstring).
    """
    data, n = _check_data(data)
    num_steps = check_positive_int(num_steps, "num_steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    steps_per_chunk = check_positive_int(steps_per_chunk, "steps_per_chunk")
    if batch_size > n:
        raise ValueError(
            f"batch_size must be at most the number of data points {n}, got {batch_size}"
        )
    if ema_decay is not None and not (0.0 <= ema_decay < 1.0 and math.isfinite(ema_decay)):
        raise ValueError(f"ema_decay must be in [0, 1) or None, got {ema_decay}")
    mesh = _device_mesh(devices)
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(
            f"batch_size must be a multiple of the {mesh.size} devices it is split over, got "
            f"{batch_size}; pass devices=1 to train on one device"
        )
    if optimizer is None:
        optimizer = default_optimizer(num_steps)

    keys = tuple(jax.random.split(key))  # (key_shuffle, key_step)
    static = {"loss_fn": loss_fn, "optimizer": optimizer, "ema_decay": ema_decay,
              "ema_warmup": bool(ema_warmup), "batch_size": batch_size, "mesh": mesh}  # fmt: skip

    def chunk(state, start, length):
        if length == 0:
            return state, (jnp.zeros((0,)), jnp.zeros((0,), bool))
        return _run_chunk(state, data, keys, start, length=length, **static)

    ema = None if ema_decay is None else jax.tree_util.tree_map(jnp.asarray, params)
    state = (params, optimizer.init(params), ema)
    if mesh is not None:  # data and state replicated; the batches are split in the scan
        replicated = NamedSharding(mesh, PartitionSpec())
        data, state = jax.device_put((data, state), replicated)

    bounds = list(range(0, num_steps, steps_per_chunk)) + [num_steps]
    bar = _progress_bar(num_steps, len(bounds) > 2 if progress is None else progress)
    losses = []
    previous = None  # (state, start) of the chunk before this one
    try:
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            new_state, (chunk_losses, finite) = chunk(state, start, stop - start)
            finite = np.asarray(finite)
            if not finite.all():
                bad = start + int(np.argmin(finite))  # the first bad step
                if bad > start:
                    losses.append(chunk_losses[: bad - start])
                # Replay up to the state at which step bad - 1 (finite) was evaluated.
                if bad == 0:
                    last = (None, None, None)
                elif bad > start:
                    last, _ = chunk(state, start, bad - 1 - start)
                else:
                    last, _ = chunk(previous[0], previous[1], bad - 1 - previous[1])
                raise NonFiniteLossError(
                    bad,
                    last[0],
                    last[2],
                    jnp.concatenate(losses) if losses else jnp.zeros((0,), chunk_losses.dtype),
                )
            previous = (state, start)
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
