"""Discrete noise schedules: DDPM's beta_1..beta_N and NCSN's sigma_1 > ... > sigma_L.

DDPM (notebooks/ddpm.md), steps i = 1..N: alpha_i = 1 - beta_i, abar_i = prod_{j<=i} alpha_j
with abar_0 := 1, and

    q(x_i | x_0) = N(sqrt(abar_i) x_0, (1 - abar_i) I),                     (ddpm-marginal)
    q(x_{i-1} | x_i, x_0) = N(mu_tilde_i, beta_tilde_i I),                  (ddpm-posterior)
    mu_tilde_i = sqrt(abar_{i-1}) beta_i / (1 - abar_i) x_0
                 + sqrt(alpha_i) (1 - abar_{i-1}) / (1 - abar_i) x_i,
    beta_tilde_i = (1 - abar_{i-1}) / (1 - abar_i) beta_i.

Arrays are 0-based: step i is index i - 1.

NCSN (notebooks/ncsn.md, eq. ``ncsn-sigmas``): a strictly decreasing geometric sequence of
noise levels, sigma_1 the largest (Song & Ermon's order), each level N(x, sigma_i^2 I).

What is exact and what is first order: NCSN's levels are the VE SDE's sigma(t) on a grid, so
its marginals are the VE marginals exactly. DDPM's chain has exact closed-form marginals of its
own (ddpm-marginal, at any N), but as a discretisation of the VP SDE it is first order: abar_i
differs from exp(-B(t_i)), t_i = i/N, by O(1/N) (8.1e-4 at N = 1000 for Ho et al.'s schedule;
notebooks/ddpm.md and notebooks/sde.md measure it).
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
    """DDPM's per-step quantities, each shape (N,); index i - 1 holds step i."""

    betas: jax.Array
    alphas: jax.Array
    alpha_bars: jax.Array
    one_minus_alpha_bars: jax.Array  # 1 - abar_i, formed in float64 (see ``ddpm_schedule``)
    alpha_bars_prev: jax.Array  # abar_{i-1}, with abar_0 := 1
    posterior_variances: jax.Array  # beta_tilde_i; 0 at step i = 1

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

    Computes alpha, abar (eq. ``ddpm-marginal``), 1 - abar, abar_{i-1} with abar_0 := 1 and
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

    beta_i = (T/N) beta(s_i) at the grid times s_i = (i - 1) T / (N - 1), i = 1..N; for T = 1
    this is beta_min/N + (i - 1)/(N (N - 1)) (beta_max - beta_min), and with [0.1, 20] and
    N = 1000 it is linspace(1e-4, 0.02, 1000), Ho et al.'s schedule. The chain's own marginals
    are exact (eq. ``ddpm-marginal``); as a discretisation it is first order: abar_i tracks the
    VP SDE's m(t_i)^2 = e^{-B(t_i)}, t_i = iT/N, with an error O(1/N) (notebooks/ddpm.md;
    notebooks/sde.md, eq. ``sde-vp``).
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
    """Mean mu_tilde (n, d) and variance beta_tilde (n,) of q(x_{i-1} | x_i = x_t, x_0).

    ``i`` (n,) holds 0-based indices (index i - 1 for step i). Derived by completing the
    square in notebooks/ddpm.md, eq. ``ddpm-posterior``; at index 0 (step 1) the variance is
    0 and the mean x_0.
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
    """eps_fn(x, i): the optimal noise prediction E[eps | x_i = x] at 0-based indices i (n,).

    With x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) eps (eq. ``ddpm-marginal``),
    E[eps | x_i] = -sqrt(1 - abar_i) grad log q_i(x_i), with q_i the mixture noised with
    scale sqrt(abar_i) and std sqrt(1 - abar_i) (notebooks/data.md, eq. ``data-noised``;
    notebooks/ddpm.md, eq. ``ddpm-dsm``). It minimises L_simple; it is not the oracle noise
    of any one sample.
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
    backwards (notebooks/ncsn.md, eq. ``ncsn-sigmas``). Stepping x_i = x_{i-1} +
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
