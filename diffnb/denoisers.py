"""The sigma-parameterisation of a diffusion and its denoiser (notebooks/sampling.md).

Every forward process of the book has the kernel q(x_t | x_0) = N(m_t x_0, sigma_t^2 I), so

    x_t = m_t (x_0 + sigma_bar_t n),   n ~ N(0, I),   sigma_bar_t = sigma_t / m_t,

which is Karras et al.'s (2022, EDM) form x = s(t) (x_0 + sigma(t) n): their s(t) is the book's
m_t and their sigma(t) is sigma_bar_t. The log-SNR of Lu et al. (2022, DPM-Solver) is
ell_t = log(m_t / sigma_t) = -log sigma_bar_t. In the scaled coordinate y = x_t / m_t every
process is the same: y is a data point blurred by N(0, sigma_bar^2 I), with density p(y; sigma_bar),
and the processes differ only in how fast sigma_bar_t grows with t (eq. ``sampling-sigma-form``).

The denoiser D(y; sigma_bar) = E[x_0 | y] is the posterior mean. By Tweedie's formula
(eq. ``sampling-denoiser``)

    D(y; sigma_bar) = y + sigma_bar^2 grad_y log p(y; sigma_bar)
                    = (x_t + sigma_t^2 grad_x log q_t(x_t)) / m_t,   x_t = m_t y,

so a score function gives a denoiser and back; ``denoiser_from_score`` and
``score_from_denoiser`` are the two directions. The probability-flow ODE in (s, sigma) form is
(eq. ``sampling-pf-ode``)

    dx/dt = (m_t' / m_t) x + (sigma_bar_t' / sigma_bar_t) (x - m_t D(x / m_t; sigma_bar_t)).

Conventions as in ``diffnb.sde``: points (n, d), times and noise levels (n,).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffnb import data
from diffnb.sde import SDE, VESDE, VPSDE, SubVPSDE, _check_points, _gaussian_log_prob, _per_point

__all__ = [
    "EDMProcess",
    "scale_and_sigma_bar",
    "log_snr",
    "time_of_sigma_bar",
    "time_of_log_snr",
    "denoiser_from_score",
    "score_from_denoiser",
    "exact_denoiser",
    "pf_ode_field",
    "to_float64",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
DenoiserFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class EDMProcess(SDE):
    """Karras et al.'s (2022) choice s(t) = 1, sigma(t) = t: dx = sqrt(2 t) dw on [0, T].

    m_t = 1 and sigma_t = sigma_bar_t = t, so time is the noise level itself, d sigma_t^2/dt =
    g^2 = 2t, and the probability-flow ODE is dx/dt = (x - D(x; t)) / t. The prior at T is
    N(0, T^2 I); EDM's sigma_max = 80 is the default (notebooks/sampling.md).
    """

    T: float = 80.0

    def __post_init__(self):
        T = float(self.T)
        if not math.isfinite(T) or T <= 0:
            raise ValueError(f"T must be a finite positive number, got {self.T}")
        object.__setattr__(self, "T", T)

    def drift(self, x, t):
        return jnp.zeros_like(_check_points(x))

    def diffusion(self, t):
        return jnp.sqrt(2.0 * jnp.asarray(t))

    def marginal(self, t):
        t = jnp.asarray(t)
        return jnp.ones_like(t), t

    def prior_sample(self, key, n, dim):
        return self.T * jax.random.normal(key, (int(n), int(dim)))

    def prior_log_prob(self, x):
        return _gaussian_log_prob(_check_points(x), self.T)


def _check_process(sde) -> SDE:
    if not isinstance(sde, VPSDE | SubVPSDE | VESDE | EDMProcess):
        raise ValueError(
            f"sde must be a VPSDE, SubVPSDE, VESDE or EDMProcess, got {type(sde).__name__}"
        )
    return sde


def scale_and_sigma_bar(sde: SDE, t) -> tuple[jax.Array, jax.Array]:
    """(m_t, sigma_bar_t) = (m_t, sigma_t / m_t): EDM's (s(t), sigma(t)), elementwise in t."""
    m, s = sde.marginal(jnp.asarray(t))
    return m, s / m


def log_snr(sde: SDE, t) -> jax.Array:
    """ell_t = log(m_t / sigma_t) = -log sigma_bar_t, elementwise (DPM-Solver's lambda_t)."""
    m, s = sde.marginal(jnp.asarray(t))
    return jnp.log(m) - jnp.log(s)


def time_of_sigma_bar(sde: SDE, sigma_bar) -> jax.Array:
    """The time t at which sigma_bar_t = ``sigma_bar``, in closed form, elementwise.

    VP: 1 + sigma_bar^2 = e^{B(t)}, so B = log1p(sigma_bar^2) and t solves the quadratic
    B(t) = beta_min t + (beta_max - beta_min) t^2 / (2T). Sub-VP: sigma_bar = 2 sinh(B/2).
    VE: sigma_bar = sigma(t), t = T log(sigma_bar / sigma_min) / log(sigma_max / sigma_min).
    EDM: t = sigma_bar. Values outside the process's range give times outside [0, T].
    """
    sde = _check_process(sde)
    sigma_bar = jnp.asarray(sigma_bar)
    if isinstance(sde, EDMProcess):
        return sigma_bar
    if isinstance(sde, VESDE):
        return sde.T * jnp.log(sigma_bar / sde.sigma_min) / sde.log_ratio
    if isinstance(sde, VPSDE):
        b = jnp.log1p(sigma_bar**2)
    else:
        b = 2.0 * jnp.arcsinh(0.5 * sigma_bar)
    slope = sde.beta_max - sde.beta_min
    if slope == 0.0:
        return b / sde.beta_min
    # Root of (slope / 2T) t^2 + beta_min t - b = 0, written without cancellation.
    return 2.0 * b / (sde.beta_min + jnp.sqrt(sde.beta_min**2 + 2.0 * slope * b / sde.T))


def time_of_log_snr(sde: SDE, ell) -> jax.Array:
    """The time t at which ell_t = ``ell``: ``time_of_sigma_bar(sde, exp(-ell))``."""
    return time_of_sigma_bar(sde, jnp.exp(-jnp.asarray(ell)))


def denoiser_from_score(sde: SDE, score_fn: ScoreFn) -> DenoiserFn:
    """D(y; sigma_bar) = (x + sigma_t^2 s(x, t)) / m_t at x = m_t y, t = t(sigma_bar).

    Tweedie's formula in the process's own coordinates (notebooks/sampling.md,
    eq. ``sampling-denoiser``). ``score_fn(x, t)`` takes the process's time; the denoiser takes
    y (n, d) and sigma_bar (n,).
    """

    def denoiser(y: jax.Array, sigma_bar: jax.Array) -> jax.Array:
        y = _check_points(y)
        t = time_of_sigma_bar(sde, _per_point(sigma_bar, y))
        m, s = sde.marginal(t)
        x = m[:, None] * y
        return (x + (s**2)[:, None] * score_fn(x, t)) / m[:, None]

    return denoiser


def score_from_denoiser(sde: SDE, denoiser: DenoiserFn) -> ScoreFn:
    """s(x, t) = (m_t D(x / m_t; sigma_bar_t) - x) / sigma_t^2, the inverse of
    ``denoiser_from_score`` (notebooks/sampling.md, eq. ``sampling-denoiser``).

    The solvers of ``diffnb.solvers`` take score functions; this wraps a denoiser for them.
    """

    def score_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        x = _check_points(x)
        m, s = sde.marginal(_per_point(t, x))
        d = denoiser(x / m[:, None], s / m)
        return (m[:, None] * d - x) / (s**2)[:, None]

    return score_fn


def exact_denoiser(mixture: data.GaussianMixture) -> DenoiserFn:
    """D(y; sigma_bar) = y + sigma_bar^2 grad_y log p(y; sigma_bar) for the mixture blurred by
    N(0, sigma_bar^2 I) (notebooks/sampling.md, eq. ``sampling-denoiser``).

    The score is ``data.score`` with scale 1 and std sigma_bar (notebooks/data.md,
    eq. ``data-score``). For a float64 reference pass float64 points inside
    ``jax.enable_x64()`` and the mixture through ``to_float64``.
    """

    def denoiser(y: jax.Array, sigma_bar: jax.Array) -> jax.Array:
        y = _check_points(y)
        sigma_bar = _per_point(sigma_bar, y)
        return y + (sigma_bar**2)[:, None] * data.score(mixture, y, 1.0, sigma_bar)

    return denoiser


def pf_ode_field(sde: SDE, denoiser: DenoiserFn) -> ScoreFn:
    """v(x, t) = (m_t'/m_t) x + (sigma_bar_t'/sigma_bar_t) (x - m_t D(x/m_t; sigma_bar_t)).

    The probability-flow ODE in (s, sigma) form (notebooks/sampling.md, eq. ``sampling-pf-ode``);
    the time derivatives come from ``jax.jvp`` of ``scale_and_sigma_bar``. It equals
    ``sde.probability_flow(score_fn)`` when ``denoiser = denoiser_from_score(sde, score_fn)``.
    """

    def vector_field(x: jax.Array, t: jax.Array) -> jax.Array:
        x = _check_points(x)
        t = _per_point(t, x)
        (m, sb), (dm, dsb) = jax.jvp(
            lambda u: scale_and_sigma_bar(sde, u), (t,), (jnp.ones_like(t),)
        )
        d = denoiser(x / m[:, None], sb)
        return (dm / m)[:, None] * x + (dsb / sb)[:, None] * (x - m[:, None] * d)

    return vector_field


def to_float64(mixture: data.GaussianMixture) -> data.GaussianMixture:
    """The mixture's arrays in float64 (call inside ``jax.enable_x64()``), for reference solves."""
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), mixture)
