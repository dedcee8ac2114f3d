"""Discrete noise schedules: DDPM's beta_1..beta_N and NCSN's sigma_1 > ... > sigma_L.

DDPM (notebooks/ddpm.md): alpha_t = 1 - beta_t, abar_t = prod_{s<=t} alpha_s, and

    q(y_t | y_0) = N(sqrt(abar_t) y_0, (1 - abar_t) I),                     (ddpm-marginal)
    q(y_{t-1} | y_t, y_0) = N(mu_t, beta_tilde_t I),                        (ddpm-posterior)
    mu_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t) y_0
           + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) y_t,
    beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t,   with abar_0 := 1.

Arrays are indexed i = 0..N-1, the paper's t = i + 1.

NCSN (notebooks/ncsn.md, eq. ``ncsn-sigmas``): a strictly decreasing geometric sequence of
noise levels, sigma_1 the largest (Song & Ermon's order), each level N(y, sigma_i^2 I).

NCSN's levels are the VE SDE's sigma(t) on a grid, so its marginals are the VE marginals exactly.
DDPM's chain has closed-form marginals of its own; they match the VP SDE's to first order in 1/N.
The factories run eagerly (they check values); the functions they return are jit-compatible.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffnb import data
from diffnb._checks import check_positive_int
from diffnb.sde import VESDE, VPSDE

__all__ = [
    "DDPMSchedule",
    "ddpm_schedule",
    "ddpm_from_vp",
    "ddpm_posterior",
    "exact_eps",
    "NCSNSchedule",
    "ncsn_schedule",
    "ncsn_from_ve",
    "exact_ncsn_score",
]


class DDPMSchedule(NamedTuple):
    """DDPM's per-step quantities, each shape (N,), index i = paper's t - 1."""

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array
    one_minus_alpha_bars: jax.Array  # 1 - abar_t, formed in float64 (see ``ddpm_schedule``)
    alpha_bars_prev: jax.Array  # abar_{t-1}, with abar_0 := 1
    posterior_variances: jax.Array  # beta_tilde_t; 0 at t = 1

    @property
    def num_steps(self) -> int:
        return self.betas.shape[0]


class NCSNSchedule(NamedTuple):
    """NCSN's noise levels sigma_1 > ... > sigma_L, shape (L,)."""

    sigmas: jax.Array

    @property
    def num_levels(self) -> int:
        return self.sigmas.shape[0]


def _vector(values, name: str) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite")
    return values


def ddpm_schedule(betas) -> DDPMSchedule:
    """The DDPM schedule of the variances ``betas`` (N,), each in (0, 1).

    Computes alpha, abar (eq. ``ddpm-marginal``), 1 - abar, abar_{t-1} with abar_0 := 1 and
    beta_tilde (eq. ``ddpm-posterior``) in float64, stored as float32. 1 - abar is stored
    rather than left to the user: at Ho et al.'s first steps it is about 1e-4, and forming it
    from float32 abar would lose up to 3e-4 of its relative precision to cancellation.
    """
    betas = _vector(betas, "betas")
    if np.any(betas <= 0) or np.any(betas >= 1):
        raise ValueError(f"betas must lie in (0, 1), got min {betas.min()}, max {betas.max()}")
    alphas = 1.0 - betas
    alpha_bars = np.cumprod(alphas)
    alpha_bars_prev = np.concatenate([[1.0], alpha_bars[:-1]])
    posterior_variances = (1.0 - alpha_bars_prev) / (1.0 - alpha_bars) * betas
    as_f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
    quantities = (betas, alphas, alpha_bars, 1.0 - alpha_bars, alpha_bars_prev, posterior_variances)
    return DDPMSchedule(*map(as_f32, quantities))


def ddpm_from_vp(sde: VPSDE, num_steps: int) -> DDPMSchedule:
    """DDPM with N = ``num_steps`` steps as the discretisation of ``sde``.

    beta_i = (T/N) beta(t_i) at t_i = (i - 1) T / (N - 1), i = 1..N; for T = 1 this is
    beta_min/N + (i - 1)/(N (N - 1)) (beta_max - beta_min), and with [0.1, 20] and N = 1000 it
    is linspace(1e-4, 0.02, 1000), Ho et al.'s schedule. abar_i then tracks the VP mean
    e^{-B(iT/N)} with an error O(1/N) (notebooks/sde.md, eq. ``sde-vp``).
    """
    if not isinstance(sde, VPSDE):
        raise ValueError(f"sde must be a VPSDE, got {type(sde).__name__}")
    n = check_positive_int(num_steps, "num_steps")
    if n < 2:
        raise ValueError(f"num_steps must be at least 2, got {num_steps}")
    grid = np.linspace(0.0, sde.T, n)
    betas = (sde.T / n) * (sde.beta_min + grid / sde.T * (sde.beta_max - sde.beta_min))
    if np.any(betas >= 1):
        raise ValueError(f"num_steps={n} is too small for this sde: some beta_i >= 1")
    return ddpm_schedule(betas)


def _step_index(i, n: int) -> jax.Array:
    i = jnp.asarray(i)
    if i.shape != (n,) or not jnp.issubdtype(i.dtype, jnp.integer):
        raise ValueError(f"i must be an integer array of shape ({n},), got {i.dtype}{i.shape}")
    return i


def ddpm_posterior(
    schedule: DDPMSchedule, x_t: jax.Array, x_0: jax.Array, i: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Mean (n, d) and variance (n,) of q(y_{t-1} | y_t = x_t, y_0 = x_0) at step i = t - 1.

    notebooks/ddpm.md, eq. ``ddpm-posterior``; at i = 0 the variance is 0 and the mean x_0.
    """
    x_t, x_0 = jnp.asarray(x_t), jnp.asarray(x_0)
    if x_t.ndim != 2 or x_0.shape != x_t.shape:
        raise ValueError(f"x_t and x_0 must have equal shapes (n, d), got {x_t.shape}, {x_0.shape}")
    i = _step_index(i, x_t.shape[0])
    beta, alpha, abar_prev = schedule.betas[i], schedule.alphas[i], schedule.alpha_bars_prev[i]
    one_minus = schedule.one_minus_alpha_bars
    one_minus_abar = one_minus[i]
    one_minus_prev = jnp.where(i > 0, one_minus[jnp.maximum(i - 1, 0)], 0.0)
    coef_0 = jnp.sqrt(abar_prev) * beta / one_minus_abar
    coef_t = jnp.sqrt(alpha) * one_minus_prev / one_minus_abar
    return coef_0[:, None] * x_0 + coef_t[:, None] * x_t, schedule.posterior_variances[i]


def exact_eps(
    schedule: DDPMSchedule, mixture: data.GaussianMixture
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """eps_fn(x, i): the optimal noise prediction E[eps | y_t = x] at integer steps i (n,).

    With y_t = sqrt(abar) y_0 + sqrt(1 - abar) eps (eq. ``ddpm-marginal``),
    E[eps | y_t] = -sqrt(1 - abar) grad log q_t(y_t), the score of the mixture noised with
    scale sqrt(abar_i) and std sqrt(1 - abar_i) (notebooks/data.md, eq. ``data-noised``).
    """

    def eps_fn(x: jax.Array, i: jax.Array) -> jax.Array:
        x = jnp.asarray(x)
        i = _step_index(i, x.shape[0])
        abar = schedule.alpha_bars[i]
        std = jnp.sqrt(schedule.one_minus_alpha_bars[i])
        return -std[:, None] * data.score(mixture, x, jnp.sqrt(abar), std)

    return eps_fn


def ncsn_schedule(sigmas) -> NCSNSchedule:
    """The NCSN schedule of noise levels ``sigmas`` (L,): positive and strictly decreasing."""
    sigmas = _vector(sigmas, "sigmas")
    if np.any(sigmas <= 0):
        raise ValueError(f"sigmas must be positive, got min {sigmas.min()}")
    if np.any(np.diff(sigmas) >= 0):
        raise ValueError("sigmas must be strictly decreasing (sigma_1 the largest)")
    return NCSNSchedule(jnp.asarray(sigmas, dtype=jnp.float32))


def ncsn_from_ve(sde: VESDE, num_levels: int) -> NCSNSchedule:
    """L = ``num_levels`` geometric levels from sde.sigma_max down to sde.sigma_min.

    sigma_i = sigma(t_i) at t_i = T (L - i)/(L - 1), i = 1..L: the VE SDE's sigma(t) read
    backwards (notebooks/ncsn.md, eq. ``ncsn-sigmas``). Stepping y_i = y_{i-1} +
    sqrt(sigma_{i-1}^2 - sigma_i^2) z from the small levels up reproduces the VE marginals
    exactly.
    """
    if not isinstance(sde, VESDE):
        raise ValueError(f"sde must be a VESDE, got {type(sde).__name__}")
    n = check_positive_int(num_levels, "num_levels")
    if n < 2:
        raise ValueError(f"num_levels must be at least 2, got {num_levels}")
    return ncsn_schedule(np.geomspace(sde.sigma_max, sde.sigma_min, n))


def exact_ncsn_score(mixture: data.GaussianMixture) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """score_fn(x, sigma) = grad_x log q_sigma(x), q_sigma = mixture * N(0, sigma^2 I); sigma (n,).

    notebooks/data.md, eq. ``data-noised`` with scale 1 and std sigma. Jit-compatible.
    """

    def score_fn(x: jax.Array, sigma: jax.Array) -> jax.Array:
        return data.score(mixture, x, 1.0, sigma)

    return score_fn
