"""Few-step solvers of the probability-flow ODE, and EDM's stochastic sampler.

Derived in notebooks/sampling.md. Every solver runs on a grid of times T >= t_0 > t_1 > ... >
t_N > 0 of a process ``sde`` (VP, sub-VP, VE or ``denoisers.EDMProcess``), takes the same
``score_fn(x, t)`` as ``diffnb.samplers`` (x (n, d), t (n,)) and returns
``samplers.SamplerResult(samples, trajectory, nfe)``. A denoiser D(y; sigma_bar) is used through
``denoisers.score_from_denoiser``, and any plain function of (x, t) (a guided score, say) works
unchanged. Notation (the book's table; EDM's and DPM-Solver's symbols in brackets): m_t [s(t),
alpha_t], sigma_t [s(t) sigma(t), sigma_t], sigma_bar_t = sigma_t / m_t [sigma(t), e^{-lambda}],
ell_t = log(m_t / sigma_t) [lambda_t]; h = ell_{i+1} - ell_i > 0 on a decreasing grid. The
noise prediction is eps(x, t) = -sigma_t s(x, t), the data prediction D = (x - sigma_t eps) / m_t.

Each solver is one *step function* (x, memory, t_i, t_{i+1}, key) -> (x, memory), plugged into
one jitted ``lax.scan`` over the grid (``_solve``; notebooks/sampling.md, "Solvers as step
functions"). The scan's length is 64 steps or the next power of two, and the steps past N are
skipped, so a sweep over N compiles once per length, not once per N:

- ``euler``: explicit Euler in t on dx/dt = f - g^2 s / 2 (eq. ``sampling-euler``);
- ``heun``: EDM's Algorithm 1 in y = x / m_t, stepping in sigma_bar (eq. ``sampling-heun``);
- ``dpm_solver`` of order 1, 2, 3: Lu et al.'s single-step exponential integrators with the
  noise prediction (order 1 is DDIM; eqs. ``sampling-exp-integrator``, ``sampling-dpm``);
- ``dpm_solver_pp``: DPM-Solver++(2M), multistep, data prediction (eq. ``sampling-dpmpp``);
- ``edm_stochastic``: EDM's Algorithm 2, churn then a Heun step (eq. ``sampling-churn``);
- ``predictor_corrector``: Song et al.'s Langevin corrector and reverse-diffusion predictor
  on any grid, in y = x / m_t and sigma_bar (notebooks/sde.md, eq. ``sde-pc``).

The last step. Each solver integrates the ODE down to the grid's last time t_N > 0, where
sigma_bar is small but not zero; with ``denoise=True`` (the default) it then returns
D(x_N / m; sigma_bar_N), which is one Euler step in sigma_bar from sigma_bar_N to 0 (EDM's last
step), for one more score call. Without it the samples keep a blur of std sigma_t at t_N: 0.0105
for VP at t = 1e-3 against the nine Gaussians' mode std 0.25.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from diffnb._checks import (
    check_nonnegative_int,
    check_positive,
    check_positive_int,
    check_samples,
)
from diffnb.denoisers import (
    _check_process,
    log_snr,
    scale_and_sigma_bar,
    time_of_log_snr,
    time_of_sigma_bar,
)
from diffnb.samplers import SamplerResult, langevin_correct
from diffnb.sde import SDE

__all__ = [
    "GRIDS",
    "time_grid",
    "euler",
    "heun",
    "dpm_solver",
    "dpm_solver_pp",
    "edm_stochastic",
    "predictor_corrector",
    "reference_solve",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
GRIDS = ("time", "log_snr", "edm")


# ---------------------------------------------------------------------------------------------
# Grids.


def time_grid(
    sde: SDE, num_steps: int, kind: str = "time", t_min: float = 1e-3, rho: float = 7.0
) -> np.ndarray:
    """num_steps + 1 times from T down to ``t_min`` (float64), strictly decreasing.

    ``kind``: ``"time"`` uniform in t; ``"log_snr"`` uniform in ell_t (DPM-Solver's grid);
    ``"edm"`` EDM's sigma_bar_i = (a + i/N (b - a))^rho with a = sigma_bar_max^(1/rho),
    b = sigma_bar_min^(1/rho) (notebooks/sampling.md, eq. ``sampling-edm-grid``).
    """
    sde = _check_process(sde)
    num_steps = check_positive_int(num_steps, "num_steps")
    if kind not in GRIDS:
        raise ValueError(f"kind must be one of {GRIDS}, got {kind!r}")
    t_min = check_positive(t_min, "t_min")
    if not t_min < sde.T:
        raise ValueError(f"t_min must lie in (0, T) = (0, {sde.T}), got {t_min}")
    rho = check_positive(rho, "rho")
    frac = np.linspace(0.0, 1.0, num_steps + 1)
    with jax.enable_x64():
        ends = jnp.asarray([sde.T, t_min], jnp.float64)
        if kind == "time":
            t = sde.T + frac * (t_min - sde.T)
        elif kind == "log_snr":
            ell = np.asarray(log_snr(sde, ends))
            t = time_of_log_snr(sde, jnp.asarray(ell[0] + frac * (ell[1] - ell[0])))
        else:
            sb = np.asarray(scale_and_sigma_bar(sde, ends)[1]) ** (1.0 / rho)
            t = time_of_sigma_bar(sde, jnp.asarray((sb[0] + frac * (sb[1] - sb[0])) ** rho))
        t = np.array(t, np.float64)
    t[0], t[-1] = sde.T, t_min  # exact end points
    return t


def _check_grid(grid, sde: SDE, min_steps: int) -> np.ndarray:
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1:
        raise ValueError(f"grid must be a 1-D array of times, got shape {grid.shape}")
    if not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        raise ValueError("grid must hold finite positive times (the last one is t_N > 0)")
    if np.any(np.diff(grid) >= 0):
        raise ValueError("grid must be strictly decreasing (t_0 > t_1 > ... > t_N)")
    if grid[0] > sde.T * (1 + 1e-12):
        raise ValueError(f"grid must start at or below T = {sde.T}, got {grid[0]}")
    if grid.shape[0] - 1 < min_steps:
        raise ValueError(
            f"grid must have at least {min_steps} steps ({min_steps + 1} times) for this solver, "
            f"got {grid.shape[0] - 1}"
        )
    return grid


# ---------------------------------------------------------------------------------------------
# What every step needs at a time t: (m, sigma, sigma_bar, ell) and the two predictions.


class _Coef(NamedTuple):
    m: jax.Array
    s: jax.Array
    sb: jax.Array
    ell: jax.Array


def _coef(sde, t) -> _Coef:
    m, s = sde.marginal(t)
    return _Coef(m, s, s / m, jnp.log(m) - jnp.log(s))


class _Ctx(NamedTuple):
    """The process and the score, with the two predictions at a scalar time t."""

    sde: SDE
    score_fn: ScoreFn

    def eps(self, x, t):
        """eps(x, t) = -sigma_t s(x, t)."""
        return -self.sde.marginal(t)[1] * self.score_fn(x, jnp.full((x.shape[0],), t, x.dtype))

    def data(self, x, t):
        """D(x / m_t; sigma_bar_t) = (x - sigma_t eps(x, t)) / m_t, the data prediction."""
        m, s = self.sde.marginal(t)
        return (x - s * self.eps(x, t)) / m


# ---------------------------------------------------------------------------------------------
# Step functions: (ctx, x, memory, t0, t1, key) -> (x, memory). ``memory`` is the previous data
# prediction and step ell-width (used by the multistep solver only).


def _euler_step(ctx, x, memory, t0, t1, key):
    # Euler step in t: x <- x + (t1 - t0) [f(x, t0) - g(t0)^2 s(x, t0) / 2].
    field = ctx.sde.probability_flow(ctx.score_fn)
    return x + (t1 - t0) * field(x, jnp.full((x.shape[0],), t0, x.dtype)), memory


def _heun_step(ctx, x, memory, t0, t1, key):
    # EDM Algorithm 1 in y = x / m, sigma_bar; dy/dsigma_bar = eps(x, t).
    c0, c1 = _coef(ctx.sde, t0), _coef(ctx.sde, t1)
    y = x / c0.m
    # Euler step.
    d0 = ctx.eps(x, t0)
    y_next = y + (c1.sb - c0.sb) * d0
    # Apply 2nd order correction.
    d1 = ctx.eps(c1.m * y_next, t1)
    y_next = y + (c1.sb - c0.sb) * 0.5 * (d0 + d1)
    return c1.m * y_next, memory


def _dpm1_step(ctx, x, memory, t0, t1, key):
    # DPM-Solver-1 = DDIM: x <- (m1/m0) x - sigma_1 (e^h - 1) eps(x, t0).
    c0, c1 = _coef(ctx.sde, t0), _coef(ctx.sde, t1)
    h = c1.ell - c0.ell
    return (c1.m / c0.m) * x - c1.s * jnp.expm1(h) * ctx.eps(x, t0), memory


def _dpm2_step(ctx, x, memory, t0, t1, key):
    # DPM-Solver-2 (Lu et al. 2022, Algorithm 1, r1 = 1/2).
    c0, c1 = _coef(ctx.sde, t0), _coef(ctx.sde, t1)
    h = c1.ell - c0.ell
    # Intermediate point at the log-SNR midpoint.
    t_mid = time_of_log_snr(ctx.sde, c0.ell + 0.5 * h)
    cm = _coef(ctx.sde, t_mid)
    e0 = ctx.eps(x, t0)
    u = (cm.m / c0.m) * x - cm.s * jnp.expm1(0.5 * h) * e0
    # Full step with the midpoint's noise prediction.
    return (c1.m / c0.m) * x - c1.s * jnp.expm1(h) * ctx.eps(u, t_mid), memory


def _dpm3_step(ctx, x, memory, t0, t1, key):
    # DPM-Solver-3 (Lu et al. 2022, Algorithm 2, r1 = 1/3, r2 = 2/3).
    r1, r2 = 1.0 / 3.0, 2.0 / 3.0
    c0, c1 = _coef(ctx.sde, t0), _coef(ctx.sde, t1)
    h = c1.ell - c0.ell
    t_a = time_of_log_snr(ctx.sde, c0.ell + r1 * h)
    t_b = time_of_log_snr(ctx.sde, c0.ell + r2 * h)
    ca, cb = _coef(ctx.sde, t_a), _coef(ctx.sde, t_b)
    e0 = ctx.eps(x, t0)
    # First intermediate point (a DPM-Solver-1 step to ell_0 + h/3).
    u1 = (ca.m / c0.m) * x - ca.s * jnp.expm1(r1 * h) * e0
    d1 = ctx.eps(u1, t_a) - e0
    # Second intermediate point (ell_0 + 2h/3), corrected by the first difference.
    phi_b = jnp.expm1(r2 * h) / (r2 * h) - 1.0
    u2 = (cb.m / c0.m) * x - cb.s * jnp.expm1(r2 * h) * e0 - cb.s * (r2 / r1) * phi_b * d1
    d2 = ctx.eps(u2, t_b) - e0
    # Full step, corrected by the second difference.
    phi_1 = jnp.expm1(h) / h - 1.0
    return (c1.m / c0.m) * x - c1.s * jnp.expm1(h) * e0 - c1.s / r2 * phi_1 * d2, memory


@cache
def _dpmpp_step(order):
    def step(ctx, x, memory, t0, t1, key):
        # DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2): data prediction, multistep.
        d_prev, h_prev = memory
        c0, c1 = _coef(ctx.sde, t0), _coef(ctx.sde, t1)
        h = c1.ell - c0.ell
        d0 = ctx.data(x, t0)
        # Second-order combination of the last two data predictions (not on the first step).
        use_prev = (h_prev > 0) & (order == 2)
        r = h_prev / h
        d_mix = jnp.where(use_prev, (1 + 0.5 / jnp.where(use_prev, r, 1.0)) * d0
                          - (0.5 / jnp.where(use_prev, r, 1.0)) * d_prev, d0)  # fmt: skip
        # x <- (sigma_1 / sigma_0) x - m_1 (e^{-h} - 1) D.
        x = (c1.s / c0.s) * x - c1.m * jnp.expm1(-h) * d_mix
        return x, (d0, h)

    return step


@cache
def _edm_stochastic_step(churn, s_tmin, s_tmax, s_noise, num_steps):
    gamma_max = min(churn / num_steps, math.sqrt(2.0) - 1.0)

    def step(ctx, x, memory, t0, t1, key):
        # EDM Algorithm 2 in y = x / m, sigma_bar.
        c0, c1 = _coef(ctx.sde, t0), _coef(ctx.sde, t1)
        y = x / c0.m
        # Increase noise temporarily.
        gamma = jnp.where((c0.sb >= s_tmin) & (c0.sb <= s_tmax), gamma_max, 0.0)
        sb_hat = c0.sb * (1.0 + gamma)
        z = jax.random.normal(key, y.shape, y.dtype)
        # sqrt(sb_hat^2 - sb^2) written as sb sqrt(gamma (2 + gamma)): the difference of
        # squares can round below zero under jit when gamma = 0, and its sqrt is then NaN.
        y_hat = y + c0.sb * jnp.sqrt(gamma * (2.0 + gamma)) * s_noise * z
        t_hat = time_of_sigma_bar(ctx.sde, sb_hat)
        m_hat = ctx.sde.marginal(t_hat)[0]
        # Euler step.
        d_hat = ctx.eps(m_hat * y_hat, t_hat)
        y_next = y_hat + (c1.sb - sb_hat) * d_hat
        # Apply 2nd order correction.
        d1 = ctx.eps(c1.m * y_next, t1)
        y_next = y_hat + (c1.sb - sb_hat) * 0.5 * (d_hat + d1)
        return c1.m * y_next, memory

    return step


@cache
def _pc_step(snr, corrector_steps):
    def step(ctx, x, memory, t0, t1, key):
        key_c, key_p = jax.random.split(key)
        c0, c1 = _coef(ctx.sde, t0), _coef(ctx.sde, t1)
        t_vec = jnp.full((x.shape[0],), t0, x.dtype)
        # Langevin at t0 (alpha = 1; the step is the same in x and in y = x / m).
        x = langevin_correct(key_c, lambda u: ctx.score_fn(u, t_vec), x, snr, 1.0,
                             corrector_steps)  # fmt: skip
        # Reverse diffusion in y, a VE process in sigma_bar: grad_y log p = m s(x, t), and
        # y <- y + (sb0^2 - sb1^2) grad_y log p + sqrt(sb0^2 - sb1^2) z.
        var = c0.sb**2 - c1.sb**2
        z = jax.random.normal(key_p, x.shape, x.dtype)
        y = x / c0.m + var * c0.m * ctx.score_fn(x, t_vec) + jnp.sqrt(var) * z
        return c1.m * y, memory

    return step


# ---------------------------------------------------------------------------------------------
# The one loop.


def _padded_steps(num_steps: int) -> int:
    """The scan's length for N steps: 64, or the next power of two above 64.

    Steps past N are skipped (``lax.cond``), so one compilation serves every N up to 64 and
    a sweep over step counts compiles a few times, not once per N."""
    return max(64, 1 << (num_steps - 1).bit_length())


@partial(
    jax.jit,
    static_argnames=("score_fn", "sde", "step_fn", "denoise", "return_trajectory"),
)
def _solve(key, score_fn, sde, step_fn, grid, num_steps, x_init, denoise, return_trajectory):
    ctx = _Ctx(sde, score_fn)
    zeros = jnp.zeros_like(x_init)

    def body(carry, inputs):
        x, memory = carry
        i, t0, t1, key_step = inputs
        # One step from t_i to t_{i+1}; padding steps (i >= N) leave the state as it is.
        x, memory = jax.lax.cond(
            i < num_steps,
            lambda: step_fn(ctx, x, memory, t0, t1, key_step),
            lambda: (x, memory),
        )
        return (x, memory), (x if return_trajectory else None)

    length = grid.shape[0] - 1
    inputs = (jnp.arange(length), grid[:-1], grid[1:], jax.random.split(key, length))
    memory = (zeros, jnp.zeros((), x_init.dtype))
    (x, _), path = jax.lax.scan(body, (x_init, memory), inputs)
    if denoise:
        # Last step to sigma_bar = 0: the denoiser's output at t_N.
        x = ctx.data(x, grid[num_steps])
    if path is not None:
        path = jnp.concatenate([x_init[None], path], axis=0)
    return x, path


def _run(key, score_fn, sde, grid, n, dim, x_init, denoise, return_trajectory, step_fn, nfe,
         min_steps=1, stochastic=False):  # fmt: skip
    sde = _check_process(sde)
    grid = _check_grid(grid, sde, min_steps)
    if key is None:
        if x_init is None or stochastic:
            raise ValueError(
                "key is needed to draw x_T or the churn noise; only a deterministic "
                "solver from given x_init runs without one"
            )
        key = jax.random.key(0)  # the deterministic steps never read it
    if x_init is None:
        n, dim = check_positive_int(n, "n"), check_positive_int(dim, "dim")
        if abs(grid[0] - sde.T) > 1e-9 * sde.T:
            raise ValueError(f"grid must start at T = {sde.T} when x_init is drawn from the prior")
        key_init, key = jax.random.split(key)
        x_init = sde.prior_sample(key_init, n, dim)
    else:
        x_init = check_samples(x_init, "x_init")
    dtype = x_init.dtype
    num_steps = grid.shape[0] - 1
    padded = np.full(_padded_steps(num_steps) + 1, grid[-1])
    padded[: num_steps + 1] = grid
    x, path = _solve(
        key, score_fn, sde, step_fn, jnp.asarray(padded, dtype), num_steps, x_init,
        bool(denoise), bool(return_trajectory),
    )  # fmt: skip
    trajectory = None
    if return_trajectory:
        trajectory = path[: num_steps + 1]
        if denoise:
            trajectory = jnp.concatenate([trajectory, x[None]], axis=0)
    return SamplerResult(x, trajectory, int(nfe * num_steps + bool(denoise)))


_DOC_ARGS = """
    Args (shared by every solver):
      key: draws x_T ~ prior (then the grid starts at t_0 = T) unless ``x_init`` is given;
        the stochastic sampler also draws its churn noise from it.
      score_fn: s(x, t), x (n, d), t (n,), in the time of ``sde``.
      sde: the process (VP, sub-VP, VE or EDMProcess) whose time ``score_fn`` takes.
      grid: times t_0 > ... > t_N > 0 (``time_grid`` makes the usual ones).
      n, dim: the sample size, when ``x_init`` is None.
      x_init: (n, d) start points at t_0; their dtype (float32 or float64) is kept.
      denoise: end with D(x_N / m; sigma_bar_N) (one more call), the step to sigma_bar = 0.
      return_trajectory: keep the N + 1 states (N + 2 with ``denoise``), x_{t_0} first.
"""


def euler(key, score_fn, sde, grid, n=None, dim=2, x_init=None, denoise=True,
          return_trajectory=False) -> SamplerResult:  # fmt: skip
    """Explicit Euler in t on the probability-flow ODE dx/dt = f(x, t) - g(t)^2 s(x, t) / 2.

    x_{i+1} = x_i + (t_{i+1} - t_i) [f - g^2 s / 2](x_i, t_i) (notebooks/sde.md, eq.
    ``sde-pf-ode``; notebooks/sampling.md, eq. ``sampling-euler``). First order. For EDMProcess
    this is Euler in sigma_bar, which is DDIM. ``nfe = N (+1)``.
    """
    return _run(key, score_fn, sde, grid, n, dim, x_init, denoise, return_trajectory,
                _euler_step, 1)  # fmt: skip


def heun(key, score_fn, sde, grid, n=None, dim=2, x_init=None, denoise=True,
         return_trajectory=False) -> SamplerResult:  # fmt: skip
    """EDM's Heun solver (Karras et al. 2022, Algorithm 1) in y = x / m_t and sigma_bar.

    With d(y, sigma_bar) = (y - D(y; sigma_bar)) / sigma_bar = eps: an Euler step
    y' = y + (sigma_bar_{i+1} - sigma_bar_i) d_i, then the trapezoidal correction with
    d(y', sigma_bar_{i+1}) (notebooks/sampling.md, eq. ``sampling-heun``). Second order.
    With ``denoise`` the last step to sigma_bar = 0 is Euler's (the denoiser's output), as in
    EDM, so ``nfe = 2N + 1``: EDM's 2N' - 1 for its N' = N + 1 noise levels.
    """
    return _run(key, score_fn, sde, grid, n, dim, x_init, denoise, return_trajectory,
                _heun_step, 2)  # fmt: skip


_DPM_STEPS = {1: _dpm1_step, 2: _dpm2_step, 3: _dpm3_step}


def dpm_solver(key, score_fn, sde, grid, n=None, dim=2, order=2, x_init=None, denoise=True,
               return_trajectory=False) -> SamplerResult:  # fmt: skip
    """DPM-Solver-k (Lu et al. 2022), single step, noise prediction, k = ``order`` in {1, 2, 3}.

    x_{i+1} = (m_{i+1}/m_i) x_i - sigma_{i+1} int_0^h e^{u} eps du, the integral taken with eps
    expanded to order k - 1 in ell through k - 1 intermediate points at ell_i + r h
    (notebooks/sampling.md, eqs. ``sampling-exp-integrator``, ``sampling-dpm``). Order 1 is
    DDIM. Exact for a single Gaussian at any order. ``nfe = k N (+1)``.
    """
    if order not in _DPM_STEPS:
        raise ValueError(f"order must be 1, 2 or 3 for dpm_solver, got {order!r}")
    return _run(key, score_fn, sde, grid, n, dim, x_init, denoise, return_trajectory,
                _DPM_STEPS[order], order)  # fmt: skip


def dpm_solver_pp(key, score_fn, sde, grid, n=None, dim=2, order=2, x_init=None, denoise=True,
                  return_trajectory=False) -> SamplerResult:  # fmt: skip
    """DPM-Solver++(2M) (Lu et al. 2022b, Algorithm 2), multistep with the data prediction D.

    x_{i+1} = (sigma_{i+1}/sigma_i) x_i - m_{i+1} (e^{-h} - 1) D_mix, with D_mix = D_i on the
    first step (or for ``order=1``) and (1 + 1/(2r)) D_i - D_{i-1}/(2r), r = h_{i-1}/h_i,
    afterwards (notebooks/sampling.md, eq. ``sampling-dpmpp``). One call per step:
    ``nfe = N (+1)``. Order 2 needs at least 2 steps.
    """
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2 for dpm_solver_pp, got {order!r}")
    return _run(key, score_fn, sde, grid, n, dim, x_init, denoise, return_trajectory,
                _dpmpp_step(order), 1, min_steps=order)  # fmt: skip


def edm_stochastic(key, score_fn, sde, grid, n=None, dim=2, churn=10.0, s_tmin=0.05,
                   s_tmax=50.0, s_noise=1.003, x_init=None, denoise=True,
                   return_trajectory=False) -> SamplerResult:  # fmt: skip
    """EDM's stochastic sampler (Karras et al. 2022, Algorithm 2) in y = x / m_t, sigma_bar.

    Each step first raises the noise level to sigma_hat = sigma_bar_i (1 + gamma) by adding
    N(0, (sigma_hat^2 - sigma_bar_i^2) s_noise^2 I), with gamma = min(churn / N, sqrt 2 - 1)
    where s_tmin <= sigma_bar_i <= s_tmax and 0 elsewhere, then takes a Heun step from sigma_hat
    to sigma_bar_{i+1} (notebooks/sampling.md, eq. ``sampling-churn``). ``churn = 0`` is
    ``heun``. ``nfe = 2N (+1)``.
    """
    churn = float(churn)
    if not (math.isfinite(churn) and churn >= 0):
        raise ValueError(f"churn must be a finite non-negative number, got {churn}")
    s_noise = check_positive(s_noise, "s_noise")
    s_tmin, s_tmax = float(s_tmin), float(s_tmax)
    if not 0 <= s_tmin <= s_tmax:
        raise ValueError(f"need 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")
    num_steps = max(np.asarray(grid).shape[0] - 1, 1)
    step = _edm_stochastic_step(churn, s_tmin, s_tmax, s_noise, num_steps)
    return _run(key, score_fn, sde, grid, n, dim, x_init, denoise, return_trajectory, step, 2,
                stochastic=True)  # fmt: skip


def predictor_corrector(key, score_fn, sde, grid, n=None, dim=2, snr=0.16, corrector_steps=1,
                        x_init=None, denoise=True,
                        return_trajectory=False) -> SamplerResult:  # fmt: skip
    """Predictor-corrector sampling (Song et al. 2021, Algorithms 2 and 4) on any grid.

    ``samplers.predictor_corrector`` steps uniformly in t; this one takes the grids of the
    solvers (EDM's, say), in y = x / m_t, a VE process in sigma_bar. Each step from t_i to
    t_{i+1} first runs ``corrector_steps`` Langevin corrections at t_i with the step set by the
    signal-to-noise ratio r = ``snr`` (``samplers.langevin_correct``, alpha = 1), then one
    reverse-diffusion step, the ancestral step of the VE process:

        y <- y + (sigma_bar_i^2 - sigma_bar_{i+1}^2) grad_y log p(y) + sqrt(same) z,

    with grad_y log p = m_t s(x, t) (notebooks/sde.md, eq. ``sde-pc``). For VE and EDMProcess
    (m = 1) this is Song et al.'s Algorithm 2 on that grid. ``nfe = (1 + corrector_steps) N
    (+1)``.
    """
    snr = check_positive(snr, "snr")
    corrector_steps = check_nonnegative_int(corrector_steps, "corrector_steps")
    step = _pc_step(snr, int(corrector_steps))
    return _run(key, score_fn, sde, grid, n, dim, x_init, denoise, return_trajectory, step,
                1 + int(corrector_steps), stochastic=True)  # fmt: skip


for _solver in (euler, heun, dpm_solver, dpm_solver_pp, edm_stochastic, predictor_corrector):
    _solver.__doc__ += _DOC_ARGS


# ---------------------------------------------------------------------------------------------
# The reference solve, in float64.


def reference_solve(score_fn, sde, x_init, t_start, t_end, rtol=1e-10, atol=1e-10):
    """The probability-flow ODE from ``x_init`` at t_start to t_end, in float64 (scipy DOP853).

    The ODE is integrated in y = x / m_t against ell_t, dy/d ell = -sigma_bar eps(x, t)
    (notebooks/sampling.md, eq. ``sampling-pf-ode``), whose right-hand side is smooth where
    sigma_bar spans five decades. ``score_fn`` is called on float64 arrays inside
    ``jax.enable_x64()`` (the exact mixture score works so; pass the mixture through
    ``denoisers.to_float64``). Returns (x at t_end (n, d) float64 numpy, nfe).
    """
    sde = _check_process(sde)
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    t_start, t_end = float(t_start), float(t_end)
    if not 0 < t_end < t_start <= sde.T:
        raise ValueError(f"need 0 < t_end < t_start <= T, got t_start={t_start}, t_end={t_end}")
    x_init = np.asarray(x_init, np.float64)
    if x_init.ndim != 2:
        raise ValueError(f"x_init must have shape (n, d), got {x_init.shape}")
    shape = x_init.shape
    with jax.enable_x64():
        ctx = _Ctx(sde, score_fn)

        @jax.jit
        def rhs_jax(ell, y):
            t = time_of_log_snr(sde, ell)
            m, s = sde.marginal(t)
            return -(s / m) * ctx.eps(m * y, t)

        def rhs(ell, y):
            return np.asarray(rhs_jax(ell, jnp.asarray(y.reshape(shape)))).ravel()

        ell0, ell1 = (float(v) for v in log_snr(sde, jnp.asarray([t_start, t_end], jnp.float64)))
        m0 = float(sde.marginal(jnp.asarray(t_start, jnp.float64))[0])
        m1 = float(sde.marginal(jnp.asarray(t_end, jnp.float64))[0])
        sol = integrate.solve_ivp(
            rhs, (ell0, ell1), (x_init / m0).ravel(), method="DOP853", rtol=rtol, atol=atol
        )
    if not sol.success:
        raise RuntimeError(f"reference solve failed: {sol.message}")
    return m1 * sol.y[:, -1].reshape(shape), int(sol.nfev)
