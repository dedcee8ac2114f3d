"""Samplers: from noise back to data with a score (or noise-prediction) function.

Every sampler takes a PRNG key first and returns ``SamplerResult(samples, trajectory, nfe)``:

- ``samples`` is (n, d);
- ``trajectory`` is ``None`` unless ``return_trajectory=True``; then it holds ``steps + 1``
  states of shape (n, d), the initial noise first and ``samples`` last
  (``trajectory[0]`` is the draw from the prior, ``trajectory[-1] == samples``). What counts
  as a step is said in each docstring;
- ``nfe`` is the number of calls of the score (or epsilon) function on the whole batch.

The discrete samplers are jitted and their step loop is a ``lax.scan``; the score function,
the SDE, sizes and flags are static arguments, so a new score function compiles once. The
probability-flow ODE is solved by scipy (RK45) around a jitted vector field. Derivations:
notebooks/ncsn.md (annealed Langevin), notebooks/ddpm.md (ancestral, DDIM) and
notebooks/sde.md (reverse SDE, predictor-corrector, probability flow).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
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
from diffnb.schedules import DDPMSchedule, NCSNSchedule
from diffnb.sde import SDE, VPSDE, SubVPSDE

__all__ = [
    "SamplerResult",
    "annealed_langevin",
    "ddpm_ancestral",
    "ddim",
    "ddim_timesteps",
    "euler_maruyama",
    "langevin_correct",
    "predictor_corrector",
    "probability_flow_ode",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


class SamplerResult(NamedTuple):
    """What a sampler returns: samples (n, d), the optional (steps + 1, n, d) path, the NFE."""

    samples: jax.Array
    trajectory: jax.Array | None
    nfe: int


# ---------------------------------------------------------------------------------------------
# Shared helpers.


def _check_size(n, dim) -> tuple[int, int]:
    return check_positive_int(n, "n"), check_positive_int(dim, "dim")


def _check_choice(value, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_sde_eps(sde, eps) -> float:
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a diffnb.sde.SDE, got {type(sde).__name__}")
    eps = float(eps)
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}")
    return eps


def _check_hook(hook) -> None:
    """``hook(key, x, t)`` runs after each reverse step (t the time reached), or None."""
    if hook is not None and not callable(hook):
        raise ValueError(f"hook must be callable or None, got {type(hook).__name__}")


def _with_start(x0: jax.Array, path: jax.Array | None) -> jax.Array | None:
    """Prepend the initial state to the scanned states: (steps, n, d) -> (steps + 1, n, d)."""
    return None if path is None else jnp.concatenate([x0[None], path], axis=0)


def _result(samples, path, nfe: int) -> SamplerResult:
    return SamplerResult(samples, path, int(nfe))


# ---------------------------------------------------------------------------------------------
# NCSN: annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).


@partial(
    jax.jit,
    static_argnames=("score_fn", "n", "dim", "steps_per_level", "denoise", "return_trajectory"),
)
def _annealed_langevin(
    key, score_fn, sigmas, step_size, step_exponent, n, dim, steps_per_level, denoise,
    return_trajectory,
):  # fmt: skip
    key_init, key_levels = jax.random.split(key)
    x_init = sigmas[0] * jax.random.normal(key_init, (n, dim))
    etas = step_size * (sigmas / sigmas[-1]) ** step_exponent  # eq. ncsn-step

    def level(x, inputs):
        sigma, eta, key_level = inputs
        sigma_n = jnp.full((n,), sigma)

        def langevin_step(x, key_step):  # eq. ncsn-langevin
            z = jax.random.normal(key_step, x.shape)
            return x + 0.5 * eta * score_fn(x, sigma_n) + jnp.sqrt(eta) * z, None

        x, _ = jax.lax.scan(langevin_step, x, jax.random.split(key_level, steps_per_level))
        return x, (x if return_trajectory else None)

    keys = jax.random.split(key_levels, sigmas.shape[0])
    x, path = jax.lax.scan(level, x_init, (sigmas, etas, keys))
    if denoise:
        x = x + sigmas[-1] ** 2 * score_fn(x, jnp.full((n,), sigmas[-1]))
        path = None if path is None else jnp.concatenate([path, x[None]], axis=0)
    return x, _with_start(x_init, path)


def annealed_langevin(
    key: jax.Array,
    score_fn: ScoreFn,
    schedule: NCSNSchedule,
    n: int,
    dim: int = 2,
    steps_per_level: int = 100,
    step_size: float = 2e-5,
    step_exponent: float = 2.0,
    denoise: bool = False,
    return_trajectory: bool = False,
) -> SamplerResult:
    """Annealed Langevin dynamics over the noise levels sigma_1 > ... > sigma_L.

    Start from x ~ N(0, sigma_1^2 I) (the VE prior at sigma_max; Song & Ermon start from a
    uniform box, which the first, widest level forgets just as well). At level i run
    ``steps_per_level`` (S) Langevin steps with the score s(x, sigma_i):

        eta_i = kappa * (sigma_i / sigma_L) ** step_exponent,       kappa = ``step_size``,
        x <- x + eta_i / 2 * s(x, sigma_i) + sqrt(eta_i) * z,   z ~ N(0, I),

    notebooks/ncsn.md, eqs. ``ncsn-langevin`` and ``ncsn-step``. ``step_exponent=2`` is the
    paper's rule (eta_i proportional to sigma_i^2, so every level mixes in the same number of
    its own relaxation times); ``step_exponent=1`` is Dirmeier's (2023) mistake, kept so
    the chapter can show what it does. ``score_fn(x, sigma)`` takes sigma per point, (n,).

    With ``denoise=True`` a last step by Tweedie's formula x <- x + sigma_L^2 s(x, sigma_L)
    returns E[x_0 | x] at level sigma_L (notebooks/ncsn.md, eq. ``ncsn-tweedie``). It is off
    by default: with sigma_L = 0.01 the leftover noise adds sigma_L^2 = 1e-4 to a
    per-coordinate variance of 1/16 for the nine Gaussians (a variance ratio of 1.0016), and
    the exact score reaches the noise floor without it.

    Cost and defaults. With sigma_L = 0.01 far below the modes' std (0.25), the last levels
    barely move the points (eta_L = kappa); the width of the modes is set at the levels
    sigma ~ 0.05-0.2, so the leftover excess variance falls like 1 / (L S kappa /
    sigma_L^2) for L levels of S steps. Measured with the exact score on the nine Gaussians
    (``ncsn_from_ve(VESDE(), L)``, sigma from 10 to 0.01): L = 10 with the defaults (S = 100,
    kappa = 2e-5, Dirmeier's (2023) values) leaves modes 11% too wide; L = 20 with the
    defaults reaches the floor's thresholds (variance ratio 1.04, 2000 score calls); L = 20,
    S = 50, kappa = 5e-5 reaches it with 1000 calls, and S = 100 at 5e-5 with a margin.
    ``nfe = L * steps_per_level`` (+1 with denoise).
    The trajectory records one state per noise level (after its last Langevin step), so it has
    L + 1 entries (L + 2 with ``denoise``).
    """
    n, dim = _check_size(n, dim)
    if not isinstance(schedule, NCSNSchedule):
        raise ValueError(f"schedule must be an NCSNSchedule, got {type(schedule).__name__}")
    steps_per_level = check_positive_int(steps_per_level, "steps_per_level")
    step_size = check_positive(step_size, "step_size")
    step_exponent = float(step_exponent)
    if not np.isfinite(step_exponent):
        raise ValueError(f"step_exponent must be finite, got {step_exponent}")
    x, path = _annealed_langevin(
        key, score_fn, jnp.asarray(schedule.sigmas, jnp.float32), step_size, step_exponent,
        n, dim, steps_per_level, bool(denoise), bool(return_trajectory),
    )  # fmt: skip
    levels = schedule.sigmas.shape[0]
    return _result(x, path, levels * steps_per_level + int(bool(denoise)))


# ---------------------------------------------------------------------------------------------
# DDPM: ancestral sampling and DDIM.


@partial(jax.jit, static_argnames=("eps_fn", "n", "dim", "variance", "return_trajectory"))
def _ddpm_ancestral(key, eps_fn, schedule, n, dim, variance, return_trajectory):
    num_steps = schedule.betas.shape[0]
    key_init, key_steps = jax.random.split(key)
    x_init = jax.random.normal(key_init, (n, dim))
    variances = schedule.betas if variance == "beta" else schedule.posterior_variances

    def step(x, inputs):
        i, key_i = inputs
        eps = eps_fn(x, jnp.full((n,), i))
        coef = schedule.betas[i] / jnp.sqrt(schedule.one_minus_alpha_bars[i])
        mean = (x - coef * eps) / jnp.sqrt(schedule.alphas[i])
        sigma = jnp.where(i > 0, jnp.sqrt(variances[i]), 0.0)  # z = 0 at the last step
        x = mean + sigma * jax.random.normal(key_i, x.shape)
        return x, (x if return_trajectory else None)

    steps = jnp.arange(num_steps - 1, -1, -1)  # i = N-1, ..., 0 (paper t = N, ..., 1)
    x, path = jax.lax.scan(step, x_init, (steps, jax.random.split(key_steps, num_steps)))
    return x, _with_start(x_init, path)


def _check_ddpm(schedule):
    if not isinstance(schedule, DDPMSchedule):
        raise ValueError(f"schedule must be a DDPMSchedule, got {type(schedule).__name__}")
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), schedule)


def ddpm_ancestral(
    key: jax.Array,
    eps_fn: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: DDPMSchedule,
    n: int,
    dim: int = 2,
    variance: str = "beta",
    return_trajectory: bool = False,
) -> SamplerResult:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2), N steps from x_N ~ N(0, I).

    For steps i = N, ..., 1 (0-based indices N-1, ..., 0), with the predicted noise
    eps(x, i):

        x_{i-1} = (x_i - beta_i / sqrt(1 - abar_i) * eps(x_i, i)) / sqrt(alpha_i) + nu_i z
                                                                     (ddpm-ancestral)

    where nu_i^2 = beta_i (``variance="beta"``) or the posterior variance beta_tilde_i
    (``"beta_tilde"``), and z = 0 at the last step i = 1; derived in notebooks/ddpm.md, eq.
    ``ddpm-ancestral``. The loop never reads past the last index, and step 1 runs. The
    noise is nu_i z with nu_i the standard deviation, never beta_i z.

    For a Gaussian mode the exact reverse variance is beta_i V_{i-1} / V_i (V_i the variance
    of x_i), between beta_tilde_i and beta_i, so with the exact noise beta widens and
    beta_tilde narrows the modes, by an amount that shrinks with max beta_i (at N = 100,
    betas up to 0.2, beta makes the nine Gaussians' modes about 13% too wide). The chapter
    measures both at N = 1000 and predicts them with a one-mode recursion.

    ``nfe = N``; the trajectory has N + 1 entries, x_N first and x_0 last.
    """
    n, dim = _check_size(n, dim)
    variance = _check_choice(variance, "variance", ("beta", "beta_tilde"))
    x, path = _ddpm_ancestral(
        key, eps_fn, _check_ddpm(schedule), n, dim, variance, bool(return_trajectory)
    )
    return _result(x, path, schedule.betas.shape[0])


def ddim_timesteps(num_train_steps: int, num_steps: int) -> np.ndarray:
    """DDIM's default grid: S = ``num_steps`` 0-based indices tau_S > ... > tau_1 of the N =
    ``num_train_steps`` schedule steps, evenly spaced from N-1 down to 0 and rounded
    (notebooks/ddpm.md, eq. ``ddpm-ddim``). Step index i is paper time i + 1, so the matching
    continuous times of a 1000-step schedule are (tau + 1) / N (notebooks/sampling.md)."""
    num_train_steps = check_positive_int(num_train_steps, "num_train_steps")
    num_steps = check_positive_int(num_steps, "num_steps")
    if num_steps > num_train_steps:
        raise ValueError(
            f"num_steps must be at most the schedule's {num_train_steps} steps, got {num_steps}"
        )
    return np.round(np.linspace(num_train_steps - 1, 0, num_steps)).astype(np.int32)


def _check_timesteps(timesteps, num_train_steps: int) -> np.ndarray:
    tau = np.asarray(timesteps)
    if tau.ndim != 1 or tau.size == 0 or not np.issubdtype(tau.dtype, np.integer):
        raise ValueError(f"timesteps must be a non-empty 1-D array of integers, got {timesteps!r}")
    if not (np.all(np.diff(tau) < 0) and tau[-1] >= 0 and tau[0] < num_train_steps):
        raise ValueError(
            f"timesteps must decrease strictly within 0..{num_train_steps - 1}, got {tau.tolist()}"
        )
    return tau.astype(np.int32)


@partial(jax.jit, static_argnames=("eps_fn", "n", "dim", "return_trajectory"))
def _ddim(key, eps_fn, schedule, n, dim, tau, return_trajectory):
    x_init = jax.random.normal(key, (n, dim))
    abar, one_minus = schedule.alpha_bars, schedule.one_minus_alpha_bars
    tau_next = jnp.append(tau[1:], 0)  # the step after tau_1 reaches abar = 1, the clean data
    is_last = jnp.arange(tau.shape[0]) == tau.shape[0] - 1
    abar_next = jnp.where(is_last, 1.0, abar[tau_next])
    one_minus_next = jnp.where(is_last, 0.0, one_minus[tau_next])

    def step(x, inputs):
        i, abar_i, one_minus_i, abar_j, one_minus_j = inputs
        eps = eps_fn(x, jnp.full((n,), i))
        x0 = (x - jnp.sqrt(one_minus_i) * eps) / jnp.sqrt(abar_i)
        x = jnp.sqrt(abar_j) * x0 + jnp.sqrt(one_minus_j) * eps
        return x, (x if return_trajectory else None)

    inputs = (tau, abar[tau], one_minus[tau], abar_next, one_minus_next)
    x, path = jax.lax.scan(step, x_init, inputs)
    return x, _with_start(x_init, path)


def ddim(
    key: jax.Array,
    eps_fn: Callable[[jax.Array, jax.Array], jax.Array],
    schedule: DDPMSchedule,
    n: int,
    num_steps: int | None = None,
    dim: int = 2,
    return_trajectory: bool = False,
    timesteps=None,
) -> SamplerResult:
    """Deterministic DDIM (Song et al. 2021, eta = 0) on S of the N schedule steps.

    The 0-based indices tau_S > ... > tau_1 are evenly spaced from N-1 down to 0 (rounded;
    S = ``num_steps`` <= N), or are ``timesteps``, any strictly decreasing integers in
    0..N-1 (e.g. the "leading" and "trailing" grids of the pitfalls appendix); give one of
    the two. From x ~ N(0, I), each step predicts the clean point and moves it
    to the next noise level along the same noise:

        x0_hat = (x - sqrt(1 - abar_tau) eps(x, tau)) / sqrt(abar_tau),
        x <- sqrt(abar_next) x0_hat + sqrt(1 - abar_next) eps(x, tau)       (ddpm-ddim)

    with abar_next = 1 after tau_1, so the last step returns x0_hat; notebooks/ddpm.md, eq.
    ``ddpm-ddim``. In xbar = x / sqrt(abar) and sigmabar = sqrt((1 - abar) / abar) the step is
    xbar <- xbar + (sigmabar_next - sigmabar) eps: one Euler step of
    dxbar/dsigmabar = eps, which with eps = E[eps | x] is the VP probability-flow ODE (eq.
    ``ddpm-ddim-euler``). So DDIM has a first-order solver's error even with the exact
    noise prediction; it is exact only for the oracle noise of one sample. The key only draws
    the initial noise.

    ``nfe`` = S; the trajectory has S + 1 entries.
    """
    n, dim = _check_size(n, dim)
    schedule = _check_ddpm(schedule)
    num_train_steps = schedule.betas.shape[0]
    if (num_steps is None) == (timesteps is None):
        raise ValueError("num_steps or timesteps must be given, and not both")
    if timesteps is None:
        tau = ddim_timesteps(num_train_steps, num_steps)
    else:
        tau = _check_timesteps(timesteps, num_train_steps)
    x, path = _ddim(key, eps_fn, schedule, n, dim, jnp.asarray(tau), bool(return_trajectory))
    return _result(x, path, tau.shape[0])


# ---------------------------------------------------------------------------------------------
# Score SDEs: Euler-Maruyama on the reverse SDE, and predictor-corrector.


def _time_grid(sde, num_steps, eps):
    """T = t_0 > t_1 > ... > t_K = t_min (``eps``), evenly spaced, and the step
    h = Delta t = (T - t_min) / K."""
    return jnp.linspace(sde.T, eps, num_steps + 1)[:-1], (sde.T - eps) / num_steps


def _em_step(reverse, x, t_n, h, z, last):
    """One Euler-Maruyama step of the reverse SDE from t to t - h (h = Delta t of eq.
    ``sde-reverse-em``); no noise when ``last``."""
    mean = x - reverse.drift(x, t_n) * h
    noise = jnp.where(last, 0.0, jnp.sqrt(h)) * reverse.diffusion(t_n)[:, None] * z
    return mean + noise


def _reverse_time_scan(key, sde, n, dim, num_steps, eps, step_fn, return_trajectory, hook=None):
    """x_T ~ prior, then ``x = step_fn(x, t_n (n,), h, is_last, key_k)`` at t = T, T - h, ...,
    eps + h in one ``lax.scan``; returns the final x and, if asked, the path from x_T."""
    key_init, key_steps = jax.random.split(key)
    x_init = sde.prior_sample(key_init, n, dim)
    times, h = _time_grid(sde, num_steps, eps)
    last = jnp.arange(num_steps) == num_steps - 1

    def step(x, inputs):
        t, is_last, key_k = inputs
        x = step_fn(x, jnp.full((n,), t), h, is_last, key_k)
        if hook is not None:  # e.g. imputation: x <- hook(key, x, t - h) after each step
            x = hook(jax.random.fold_in(key_k, 1), x, jnp.full((n,), t - h))
        return x, (x if return_trajectory else None)

    x, path = jax.lax.scan(step, x_init, (times, last, jax.random.split(key_steps, num_steps)))
    return x, _with_start(x_init, path)


@partial(
    jax.jit,
    static_argnames=("score_fn", "sde", "n", "dim", "num_steps", "return_trajectory", "hook"),
)
def _euler_maruyama(key, score_fn, sde, n, dim, num_steps, eps, return_trajectory, hook=None):
    reverse = sde.reverse(score_fn)

    def step(x, t_n, h, is_last, key_k):
        return _em_step(reverse, x, t_n, h, jax.random.normal(key_k, x.shape), is_last)

    return _reverse_time_scan(key, sde, n, dim, num_steps, eps, step, return_trajectory, hook)


def euler_maruyama(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    n: int,
    num_steps: int = 100,
    dim: int = 2,
    eps: float = 1e-3,
    return_trajectory: bool = False,
    hook: Callable | None = None,
) -> SamplerResult:
    """Euler-Maruyama on the reverse-time SDE from x_T ~ prior down to the cut-off t_min = eps.

    With the reverse drift f - g^2 s and Delta t = (T - t_min) / num_steps, for t = T,
    T - Delta t, ...:

        x <- x - [f(x, t) - g(t)^2 s(x, t)] Delta t + g(t) sqrt(Delta t) z   (sde-reverse-em)

    derived in notebooks/sde.md, eq. ``sde-reverse-em`` (Anderson 1982:
    dt < 0 is the step backwards). The last step adds no noise: it returns the mean of the
    final transition, as score_sde's samplers do. For the VP SDE the noise skipped there has
    std sqrt(beta_min Delta t) = 0.03 at Delta t = 1e-2, which would add 1.6% to the 1/16
    variance of the
    nine Gaussians' modes.

    Default 100 steps: with the exact score this reaches the noise floor of the nine Gaussians
    for VP and VE (variance ratio 1.006 and 1.010, mean of six keys); sub-VP needs 200 (at 100
    its modes come out about 5% too wide, at 200 the ratio is 1.026).
    ``nfe = num_steps``; the trajectory has num_steps + 1 entries.
    """
    n, dim = _check_size(n, dim)
    eps = _check_sde_eps(sde, eps)
    num_steps = check_positive_int(num_steps, "num_steps")
    _check_hook(hook)
    x, path = _euler_maruyama(
        key, score_fn, sde, n, dim, num_steps, eps, bool(return_trajectory), hook
    )
    return _result(x, path, num_steps)


def _corrector_alpha(sde, t_n, h):
    """alpha_i of the Langevin corrector (Song et al. 2021, Alg. 5): 1 - beta(t) Delta t for VP
    and sub-VP (the DDPM alpha_i = 1 - beta_i of that step), 1 for VE (Alg. 4)."""
    if isinstance(sde, VPSDE | SubVPSDE):
        return 1.0 - sde.beta(t_n) * h
    return jnp.ones_like(t_n)


def langevin_correct(key, score_at, x, snr, alpha, steps):
    """``steps`` Langevin corrections at one noise level (eq. ``sde-pc``, notebooks/sde.md):

        eta = 2 alpha (r ||z|| / ||s||)^2,   x <- x + eta s(x) + sqrt(2 eta) z,

    with r = ``snr``, s = ``score_at(x)`` and ||z||, ||s|| the batch means of the per-point
    norms (as in score_sde: a per-point ratio explodes at the centre of a mode, where s ~ 0).
    ``alpha`` is a scalar or one value per point. Shared by both predictor-corrector samplers.
    """

    def langevin(x, key_j):
        z = jax.random.normal(key_j, x.shape, x.dtype)
        s = score_at(x)
        z_norm = jnp.mean(jnp.linalg.norm(z, axis=-1))
        s_norm = jnp.mean(jnp.linalg.norm(s, axis=-1))
        eta = jnp.broadcast_to(2.0 * alpha * (snr * z_norm / s_norm) ** 2, x.shape[:1])[:, None]
        return x + eta * s + jnp.sqrt(2.0 * eta) * z, None

    x, _ = jax.lax.scan(langevin, x, jax.random.split(key, steps))
    return x


@partial(
    jax.jit,
    static_argnames=(
        "score_fn", "sde", "n", "dim", "num_steps", "predictor", "corrector_steps",
        "return_trajectory", "hook",
    ),
)  # fmt: skip
def _predictor_corrector(
    key, score_fn, sde, n, dim, num_steps, predictor, snr, corrector_steps, eps,
    return_trajectory, hook=None,
):  # fmt: skip
    reverse = sde.reverse(score_fn)

    def corrector(x, t_n, h, key_c):
        alpha = _corrector_alpha(sde, t_n, h)
        return langevin_correct(key_c, lambda y: score_fn(y, t_n), x, snr, alpha, corrector_steps)

    def predict(x, t_n, h, z, is_last):
        if predictor == "euler_maruyama":
            return _em_step(reverse, x, t_n, h, z, is_last)
        # Reverse diffusion: undo the forward step t - h -> t of sde.discretize.
        f, g = reverse.discretize(x, t_n, h)
        return x + f + jnp.where(is_last, 0.0, 1.0) * g[:, None] * z

    def step(x, t_n, h, is_last, key_k):
        key_c, key_p = jax.random.split(key_k)
        x = corrector(x, t_n, h, key_c)
        return predict(x, t_n, h, jax.random.normal(key_p, x.shape), is_last)

    return _reverse_time_scan(key, sde, n, dim, num_steps, eps, step, return_trajectory, hook)


def predictor_corrector(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    n: int,
    num_steps: int = 200,
    dim: int = 2,
    predictor: str = "reverse_diffusion",
    snr: float = 0.16,
    corrector_steps: int = 1,
    eps: float = 1e-3,
    return_trajectory: bool = False,
    hook: Callable | None = None,
) -> SamplerResult:
    """Predictor-corrector sampling (Song et al. 2021, Algorithms 4 and 5).

    On the grid t = T, T - h, ..., t_min + h (cut-off t_min = ``eps``, h = Delta t =
    (T - t_min) / num_steps), each step first runs ``corrector_steps`` Langevin corrections
    at t, then one predictor step to t - h:

    - corrector, with the Langevin step eta set by the signal-to-noise ratio r = ``snr``:

          eta = 2 alpha_i (r ||z|| / ||s||)^2,   x <- x + eta s(x, t) + sqrt(2 eta) z   (sde-pc)

      where ||z|| and ||s|| are the batch means of the per-point norms (as in score_sde;
      a per-point ratio explodes at the centre of a mode, where s ~ 0), alpha_i =
      1 - beta(t) h for VP and sub-VP and alpha_i = 1 for VE;
    - predictor ``"reverse_diffusion"``: with the forward step x_t = x_{t-h} + f + G z of
      ``sde.discretize`` (NCSN's for VE, the telescoping DDPM step for VP),
      x <- x - f + G^2 s(x, t) + G z. For VP this is (2 - sqrt(1 - beta_i)) x + beta_i s + G z,
      which equals DDPM's ancestral step (x + beta_i s) / sqrt(1 - beta_i) + G z to first
      order in beta_i only (see ``ReverseSDE.discretize``);
      or ``"euler_maruyama"``: the step of :func:`euler_maruyama`.

    Derived in notebooks/sde.md, eq. ``sde-pc``. The last predictor step adds no noise.

    Defaults: 200 steps, snr 0.16, one corrector step. With the exact score and the
    reverse-diffusion predictor the nine Gaussians' mode weights are at the noise floor, and
    the variance ratio averages 1.025 (VP), 1.032 (sub-VP) and 1.030 (VE) over six keys: at
    the upper edge of the floor's interval [0.978, 1.029], the 2-3% excess of DDPM's
    sigma^2 = beta at N = 200 (Euler-Maruyama at 200 steps: 1.005, 1.026, 1.009). At 100 steps the
    reverse-diffusion predictor alone over-disperses the modes (variance ratio 1.13 for VP,
    the error of DDPM's sigma^2 = beta at N = 100); the corrector halves that, not enough.
    ``nfe = num_steps * (1 + corrector_steps)``: every score call counts. The trajectory has
    num_steps + 1 entries (the states after each predictor step).
    """
    n, dim = _check_size(n, dim)
    eps = _check_sde_eps(sde, eps)
    num_steps = check_positive_int(num_steps, "num_steps")
    predictor = _check_choice(predictor, "predictor", ("reverse_diffusion", "euler_maruyama"))
    snr = check_positive(snr, "snr")
    corrector_steps = check_nonnegative_int(corrector_steps, "corrector_steps")
    _check_hook(hook)
    x, path = _predictor_corrector(
        key, score_fn, sde, n, dim, num_steps, predictor, snr, corrector_steps, eps,
        bool(return_trajectory), hook,
    )  # fmt: skip
    return _result(x, path, num_steps * (1 + corrector_steps))


# ---------------------------------------------------------------------------------------------
# The probability-flow ODE, solved by scipy.


@partial(jax.jit, static_argnames=("sde", "score_fn"))
def _flow_field(sde, score_fn, x, t):
    """f_tilde(x, t) = f - 1/2 g^2 s for all points at one time t (compiled once per sde,
    score)."""
    return sde.probability_flow(score_fn)(x, jnp.full((x.shape[0],), t, x.dtype))


def probability_flow_ode(
    key: jax.Array,
    score_fn: ScoreFn,
    sde: SDE,
    n: int,
    dim: int = 2,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    return_trajectory: bool = False,
    x_init: jax.Array | None = None,
) -> SamplerResult:
    """Integrate the probability-flow ODE dx/dt = f - 1/2 g^2 s from x_T ~ prior to t_min = eps.

    The ODE (notebooks/sde.md, eq. ``sde-pf-ode``) has the same marginals q_t as the
    forward SDE, so its end point at t_min is a sample of q_tmin. It is solved by
    ``scipy.integrate.solve_ivp`` (RK45, adaptive, tolerances ``rtol``/``atol``) on the
    flattened state of all n points in float64; the jitted field is called in float32.
    The key only draws x_T. ``nfe`` is the solver's count of field evaluations (each one
    score call on the whole batch); about 100 for the nine Gaussians at 1e-5.

    The trajectory holds the state at the solver's accepted steps (T first, eps last), so its
    ``steps + 1`` entries are not evenly spaced in time. ``x_init`` (n, dim), if given, replaces
    the draw of x_T (the ODE is then a deterministic map, the flow from T to t_min); the
    key may then be None.
    """
    n, dim = _check_size(n, dim)
    eps = _check_sde_eps(sde, eps)
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    if x_init is None:
        x_init = sde.prior_sample(key, n, dim)
    elif check_samples(x_init, "x_init").shape != (n, dim):
        raise ValueError(f"x_init must have shape ({n}, {dim}), got {jnp.shape(x_init)}")
    x_init = np.asarray(x_init, dtype=np.float64)

    def rhs(t, y):
        x = jnp.asarray(y.reshape(n, dim), dtype=jnp.float32)
        return np.asarray(_flow_field(sde, score_fn, x, t), dtype=np.float64).ravel()

    sol = integrate.solve_ivp(
        rhs, (sde.T, eps), x_init.ravel(), method="RK45", rtol=rtol, atol=atol
    )
    if not sol.success:
        raise RuntimeError(f"probability-flow ODE solver failed: {sol.message}")
    states = jnp.asarray(sol.y.T.reshape(-1, n, dim), dtype=jnp.float32)
    return _result(states[-1], states if return_trajectory else None, sol.nfev)
