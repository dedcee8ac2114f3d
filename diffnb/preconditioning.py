"""EDM's preconditioned denoiser, its noise-level distribution and its loss weight.

Derived in notebooks/training.md. Training works in the sigma_bar process of
``denoisers.EDMProcess``: a data point x_0 with per-axis standard deviation sigma_d is blurred to
x = x_0 + sigma_bar eps, eps ~ N(0, I), and a network F_theta is wrapped into the denoiser
(Karras et al. 2022, eq. ``training-precond``)

    D_theta(x; sigma_bar) = c_skip x + c_out F_theta(c_in x; c_noise),

with coefficients fixed by three conditions (eqs. ``training-c-in`` to ``training-c-skip``):
the network's input c_in x has unit variance, its target F_target = (x_0 - c_skip x) / c_out
has unit variance, and c_skip minimises c_out, the factor by which the network's errors reach
D. They give

    c_in = 1 / sqrt(sigma_bar^2 + sigma_d^2),      c_skip = sigma_d^2 / (sigma_bar^2 + sigma_d^2),
    c_out = sigma_bar sigma_d / sqrt(sigma_bar^2 + sigma_d^2),   c_noise = log(sigma_bar) / 4.

With a vector sigma_d (one value per axis) the coefficients are per axis; c_noise is shared.
Training draws log sigma_bar ~ N(P_mean, P_std^2) and weights ||D_theta - x_0||^2 by
lambda = 1 / c_out^2, which makes the loss ||F_theta - F_target||^2: unit-scale at every level.

Conventions as in ``diffnb.denoisers``: points (n, d), noise levels (n,). A model function is
``apply(params, rng, x, sigma_bar) -> D (n, d)``; ``score_fn`` turns it into the score of
``EDMProcess`` for ``diffnb.solvers`` through ``denoisers.score_from_denoiser``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffnb import denoisers
from diffnb._checks import check_positive, check_samples

__all__ = [
    "Coefficients",
    "as_sigma_data",
    "edm_coefficients",
    "edm_denoiser",
    "lognormal_sigmas",
    "process_sigmas",
    "edm_loss",
    "score_fn",
    "data_std",
]

SigmaSampler = Callable[[jax.Array, int], jax.Array]
WEIGHTINGS = ("edm", "snr")


class Coefficients(NamedTuple):
    """c_skip, c_out, c_in: (n, d) or (n, 1) (per axis or shared); c_noise: (n,)."""

    c_skip: jax.Array
    c_out: jax.Array
    c_in: jax.Array
    c_noise: jax.Array


def as_sigma_data(sigma_data) -> jax.Array:
    """sigma_d as a 1-D float32 array: shape (1,) for one shared value, (d,) per axis.

    Raises ValueError (naming ``sigma_data``) unless every entry is finite and positive.
    """
    arr = np.atleast_1d(np.asarray(sigma_data, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"sigma_data must be a number or a 1-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"sigma_data must be finite and positive, got {sigma_data}")
    return jnp.asarray(arr, jnp.float32)


def edm_coefficients(sigma: jax.Array, sigma_data) -> Coefficients:
    """EDM's coefficients at noise levels sigma_bar (n,) for data std sigma_d (scalar or (d,)).

    c_in = 1/sqrt(sigma_bar^2 + sigma_d^2), c_skip = sigma_d^2/(sigma_bar^2 + sigma_d^2),
    c_out = sigma_bar sigma_d / sqrt(sigma_bar^2 + sigma_d^2), c_noise = log(sigma_bar)/4
    (notebooks/training.md, eqs. ``training-c-in``, ``training-c-out``, ``training-c-skip``).
    """
    sigma = jnp.asarray(sigma)
    if sigma.ndim != 1:
        raise ValueError(f"sigma must have shape (n,), got {sigma.shape}")
    sd = jnp.asarray(sigma_data, sigma.dtype).reshape(-1)[None, :]  # (1, d) or (1, 1)
    s = sigma[:, None]
    total = s**2 + sd**2
    return Coefficients(
        c_skip=sd**2 / total,
        c_out=s * sd * jax.lax.rsqrt(total),
        c_in=jax.lax.rsqrt(total),
        c_noise=0.25 * jnp.log(sigma),
    )


def edm_denoiser(net_apply, sigma_data):
    """The model function D_theta(x; sigma_bar) = c_skip x + c_out F_theta(c_in x; c_noise).

    ``net_apply(params, rng, u, c)`` is the raw network F_theta (``networks.score_network``'s
    apply: u (n, d), c (n,)); the result is ``apply(params, rng, x, sigma_bar) -> (n, d)``
    (notebooks/training.md, eq. ``training-precond``).
    """
    sd = as_sigma_data(sigma_data)

    def apply(params, rng, x, sigma):
        c = edm_coefficients(sigma, sd)
        return c.c_skip * x + c.c_out * net_apply(params, rng, c.c_in * x, c.c_noise)

    return apply


def lognormal_sigmas(p_mean: float = -1.2, p_std: float = 1.2) -> SigmaSampler:
    """Draw sigma_bar with log sigma_bar ~ N(P_mean, P_std^2): ``draw(key, n) -> (n,)``.

    EDM's training distribution (Karras et al. 2022, sec. 5; notebooks/training.md, eq.
    ``training-lognormal``); the defaults are EDM's, set for sigma_d = 0.5.
    """
    p_mean = float(p_mean)
    if not math.isfinite(p_mean):
        raise ValueError(f"p_mean must be a finite number, got {p_mean}")
    p_std = check_positive(p_std, "p_std")

    def draw(key, n):
        return jnp.exp(p_mean + p_std * jax.random.normal(key, (n,)))

    return draw


def process_sigmas(sde, eps: float = 1e-5) -> SigmaSampler:
    """Draw sigma_bar = sigma_bar_t of ``sde`` at t ~ U(eps, T): the noise levels that a loss
    uniform in time, such as ``losses.dsm_loss``, shows its network (notebooks/training.md)."""
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must be in (0, T = {sde.T}), got {eps}")

    def draw(key, n):
        t = jax.random.uniform(key, (n,), minval=eps, maxval=sde.T)
        return denoisers.scale_and_sigma_bar(sde, t)[1]

    return draw


def edm_loss(apply, sigma_data, sigmas: SigmaSampler | None = None, weighting: str = "edm"):
    """The denoising loss E_{sigma_bar, x_0, eps} sum_j lambda_j(sigma_bar) (D_theta - x_0)_j^2.

    x = x_0 + sigma_bar eps with sigma_bar drawn by ``sigmas`` (default ``lognormal_sigmas()``)
    and eps ~ N(0, I) (notebooks/training.md, eq. ``training-loss``). ``weighting``:

    - ``"edm"``: lambda = 1 / c_out^2 = 1/sigma_bar^2 + 1/sigma_d^2 (per axis), so the loss is
      E ||F_theta - F_target||^2, the network's own error at unit scale;
    - ``"snr"``: lambda = 1 / sigma_bar^2, the weight of ``losses.dsm_loss``'s ``"sigma2"``
      (E ||sigma_t s_theta + eps||^2 = E ||D_theta - x_0||^2 / sigma_bar^2).

    ``apply(params, rng, x, sigma_bar) -> D`` (``edm_denoiser``). The batch is an (n, d) array;
    the result is ``loss_fn(params, key, batch)`` for ``training.train``.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    sd = as_sigma_data(sigma_data)
    sigmas = lognormal_sigmas() if sigmas is None else sigmas
    if not callable(sigmas):
        raise ValueError(f"sigmas must be a function draw(key, n), got {type(sigmas).__name__}")

    def loss_fn(params, key, batch):
        key_sigma, key_noise, key_model = jax.random.split(key, 3)
        n = batch.shape[0]
        sigma = sigmas(key_sigma, n).astype(batch.dtype)
        x = batch + sigma[:, None] * jax.random.normal(key_noise, batch.shape, batch.dtype)
        residual = apply(params, key_model, x, sigma) - batch
        if weighting == "edm":
            residual = residual / edm_coefficients(sigma, sd).c_out
        else:
            residual = residual / sigma[:, None]
        return jnp.mean(jnp.sum(residual**2, axis=-1))

    return loss_fn


def score_fn(apply, params, process: denoisers.EDMProcess | None = None):
    """The score s(x, t) = (D(x; t) - x) / t of ``process`` (``EDMProcess``, time = sigma_bar)
    from a denoiser model, for ``diffnb.solvers`` and ``diffnb.likelihood``
    (``denoisers.score_from_denoiser``). ``params`` are fixed (EMA weights, say)."""
    process = denoisers.EDMProcess() if process is None else process
    if not isinstance(process, denoisers.EDMProcess):
        raise ValueError(f"process must be a denoisers.EDMProcess, got {type(process).__name__}")
    return denoisers.score_from_denoiser(process, lambda x, sigma: apply(params, None, x, sigma))


def data_std(x) -> jax.Array:
    """sigma_d estimated from data x (n, d): the per-axis standard deviation, shape (d,)."""
    return jnp.std(check_samples(x, "x"), axis=0)
