"""DDPM and NCSN schedules: SDE discretisations, the posterior, the exact oracles, bad input.

Expected values are written out from the definitions (raw betas, B(t) by hand), from brute-force
Gaussian conditioning, from Monte Carlo, or from ``data.log_prob`` (tested in test_data.py).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import data
from diffnb.schedules import (
    ddpm_from_vp,
    ddpm_posterior,
    ddpm_schedule,
    exact_eps,
    exact_ncsn_score,
    ncsn_from_ve,
    ncsn_schedule,
)
from diffnb.sde import VESDE, VPSDE


def _B(t):  # int_0^t (0.1 + 19.9 u) du
    return 0.1 * t + 0.5 * 19.9 * t**2


def test_ddpm_from_vp_is_ho_et_al_at_1000_steps():
    schedule = ddpm_from_vp(VPSDE(), 1000)
    np.testing.assert_allclose(schedule.betas, np.linspace(1e-4, 0.02, 1000), rtol=1e-5)
    assert schedule.num_steps == 1000


def test_alpha_bar_converges_to_the_vp_mean_at_first_order():
    """max_i |abar_i - exp(-B(i/N))| is about 8e-3 at N = 100 and shrinks like 1/N."""
    errors = {}
    for n in (100, 1000):
        abar = np.asarray(ddpm_from_vp(VPSDE(), n).alpha_bars, np.float64)
        errors[n] = np.max(np.abs(abar - np.exp(-_B(np.arange(1, n + 1) / n))))
    assert 6e-3 < errors[100] < 1e-2, errors
    assert 6e-4 < errors[1000] < 1e-3, errors
    order = math.log10(errors[100] / errors[1000])
    assert 0.9 < order < 1.1, order


def test_schedule_fields_follow_their_definitions():
    betas = np.array([0.3, 0.05, 0.2, 0.6])
    s = ddpm_schedule(betas)
    abar = np.array([0.7, 0.7 * 0.95, 0.7 * 0.95 * 0.8, 0.7 * 0.95 * 0.8 * 0.4])
    np.testing.assert_allclose(s.alphas, 1 - betas, rtol=1e-6)
    np.testing.assert_allclose(s.alpha_bars, abar, rtol=1e-6)
    np.testing.assert_allclose(s.alpha_bars_prev, np.r_[1.0, abar[:-1]], rtol=1e-6)
    np.testing.assert_allclose(s.one_minus_alpha_bars, 1 - abar, rtol=1e-6)
    assert float(s.posterior_variances[0]) == 0.0


def _conditioned(beta, abar_prev, x_t, x_0):
    """Brute force: condition the joint Gaussian of (y_{t-1}, y_t) given y_0 on y_t = x_t."""
    alpha = 1 - beta
    mean = np.array([math.sqrt(abar_prev), math.sqrt(alpha * abar_prev)])
    cov = np.array(
        [
            [1 - abar_prev, math.sqrt(alpha) * (1 - abar_prev)],
            [math.sqrt(alpha) * (1 - abar_prev), alpha * (1 - abar_prev) + beta],
        ]
    )
    gain = cov[0, 1] / cov[1, 1]
    return mean[0] * x_0 + gain * (x_t - mean[1] * x_0), cov[0, 0] - gain * cov[0, 1]


@pytest.mark.parametrize("which", ["random", "vp"])
def test_ddpm_posterior_matches_gaussian_conditioning(which):
    rng = np.random.default_rng(0)
    betas = rng.uniform(1e-3, 0.3, 20) if which == "random" else np.linspace(1e-4, 0.02, 1000)
    schedule = ddpm_schedule(betas)
    n = len(betas)
    i = np.array([0, 1, n // 2, n - 1])
    x_t, x_0 = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    mean, var = ddpm_posterior(schedule, jnp.asarray(x_t), jnp.asarray(x_0), jnp.asarray(i))
    for row, step in enumerate(i):
        abar_prev = float(np.prod(1 - betas[:step]))
        want_mean, want_var = _conditioned(betas[step], abar_prev, x_t[row], x_0[row])
        np.testing.assert_allclose(mean[row], want_mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(var[row], want_var, rtol=1e-4, atol=1e-7)


def _fd_score(mixture, x, scale, std, h):
    columns = []
    for e in jnp.eye(x.shape[1]):
        up = np.asarray(data.log_prob(mixture, x + h * e[None, :], scale, std), np.float64)
        down = np.asarray(data.log_prob(mixture, x - h * e[None, :], scale, std), np.float64)
        columns.append((up - down) / (2 * h))
    return np.stack(columns, axis=1)


def test_exact_eps_matches_finite_differences(nine):
    betas = np.linspace(1e-4, 0.02, 1000)
    eps_fn = exact_eps(ddpm_schedule(betas), nine)
    x = 1.5 * jax.random.normal(jax.random.key(0), (8, 2))
    for step in (0, 99, 999):
        abar = float(np.prod(1 - betas[: step + 1]))
        scale, std = math.sqrt(abar), math.sqrt(1 - abar)
        fd = -std * _fd_score(nine, x, scale, std, h=1e-2 * max(std, 0.25))
        got = np.asarray(eps_fn(x, jnp.full((8,), step)))
        np.testing.assert_allclose(got, fd, rtol=2e-2, atol=2e-2 * np.max(np.abs(fd)))


def test_early_steps_keep_full_precision(nine):
    """At Ho et al.'s first steps 1 - abar ~ 1e-4: float32 1 - alpha_bars would be 3e-4 off."""
    betas = np.linspace(1e-4, 0.02, 1000)
    schedule = ddpm_schedule(betas)
    one_minus_64 = -np.expm1(np.cumsum(np.log1p(-betas)))
    np.testing.assert_allclose(schedule.one_minus_alpha_bars, one_minus_64, rtol=1e-6)
    x = jnp.array([[-2.01, 0.02], [1.99, 2.0], [0.0, -1.98]])
    for step in (0, 1, 2):
        one_minus = -math.expm1(np.sum(np.log1p(-betas[: step + 1])))  # float64
        scale, std = math.sqrt(1 - one_minus), math.sqrt(one_minus)
        want = -std * np.asarray(data.score(nine, x, scale, std), np.float64)
        got = exact_eps(schedule, nine)(x, jnp.full((3,), step))
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_exact_eps_is_the_conditional_mean_of_the_noise(nine):
    """E[eps | y_t] leaves a residual orthogonal to itself: E[(eps - eps_hat) . eps_hat] = 0."""
    schedule = ddpm_from_vp(VPSDE(), 1000)
    n, step = 20_000, 300
    key_data, key_noise = jax.random.split(jax.random.key(1))
    y0, eps = data.sample(key_data, nine, n), jax.random.normal(key_noise, (n, 2))
    abar = float(schedule.alpha_bars[step])
    y_t = math.sqrt(abar) * y0 + math.sqrt(1 - abar) * eps
    eps_hat = np.asarray(exact_eps(schedule, nine)(y_t, jnp.full((n,), step)), np.float64)
    inner = np.sum((np.asarray(eps, np.float64) - eps_hat) * eps_hat, axis=1)
    assert abs(inner.mean()) < 4 * inner.std() / math.sqrt(n)
    # and it explains a real share of the noise, unlike a zero predictor
    assert np.mean(np.sum(eps_hat**2, 1)) > 0.1


def test_ncsn_from_ve_is_geometric_and_samples_the_ve_marginal():
    ve = VESDE()
    sigmas = np.asarray(ncsn_from_ve(ve, 10).sigmas, np.float64)
    np.testing.assert_allclose(sigmas[[0, -1]], [10.0, 0.01], rtol=1e-5)
    np.testing.assert_allclose(sigmas[1:] / sigmas[:-1], 1000.0 ** (-1 / 9), rtol=1e-5)
    # NCSN's chain y_i = y_{i-1} + sqrt(sigma_{i-1}^2 - sigma_i^2) z from the smallest level up.
    n = 20_000
    keys = jax.random.split(jax.random.key(2), 10)
    y = 1.5 + 0.01 * np.asarray(jax.random.normal(keys[0], (n, 2)), np.float64)
    levels = sigmas[::-1]
    for k in range(1, 10):
        z = np.asarray(jax.random.normal(keys[k], (n, 2)), np.float64)
        y = y + math.sqrt(levels[k] ** 2 - levels[k - 1] ** 2) * z
        std = float(ve.marginal(jnp.array([k / 9]))[1][0])
        np.testing.assert_allclose(std, levels[k], rtol=1e-5)
        assert np.all(np.abs(y.var(0, ddof=1) - std**2) < 4 * std**2 * math.sqrt(2 / (n - 1)))
        assert np.all(np.abs(y.mean(0) - 1.5) < 4 * std / math.sqrt(n))


def test_exact_ncsn_score_matches_finite_differences(nine):
    score_fn = exact_ncsn_score(nine)
    x = 2.0 * jax.random.normal(jax.random.key(3), (8, 2))
    for sigma in (0.01, 0.3, 5.0):
        fd = _fd_score(nine, x, 1.0, sigma, h=1e-2 * max(sigma, 0.25))
        got = np.asarray(score_fn(x, jnp.full((8,), sigma)))
        np.testing.assert_allclose(got, fd, rtol=2e-2, atol=2e-2 * np.max(np.abs(fd)))


def test_oracles_and_posterior_jit():
    schedule = ddpm_from_vp(VPSDE(), 100)
    nine = data.nine_gaussians()
    x = jnp.ones((3, 2))
    i = jnp.array([0, 50, 99])
    eps = jax.jit(exact_eps(schedule, nine))(x, i)
    np.testing.assert_allclose(eps, exact_eps(schedule, nine)(x, i), rtol=1e-5)
    mean, var = jax.jit(ddpm_posterior)(schedule, x, 2 * x, i)
    assert mean.shape == (3, 2) and var.shape == (3,)


@pytest.mark.parametrize(
    "make,argument",
    [
        (lambda: ddpm_schedule([0.1, 1.0]), "betas"),
        (lambda: ddpm_schedule([0.0, 0.1]), "betas"),
        (lambda: ddpm_schedule([[0.1, 0.2]]), "betas"),
        (lambda: ddpm_schedule([]), "betas"),
        (lambda: ddpm_schedule([0.1, float("nan")]), "betas"),
        (lambda: ddpm_from_vp(VESDE(), 100), "sde"),
        (lambda: ddpm_from_vp(VPSDE(), 0), "num_steps"),
        (lambda: ddpm_from_vp(VPSDE(), 2.5), "num_steps"),
        (lambda: ddpm_from_vp(VPSDE(), 10), "num_steps"),  # beta_N = 2 > 1
        (lambda: ncsn_schedule([1.0, 1.0]), "sigmas"),
        (lambda: ncsn_schedule([0.1, 1.0]), "sigmas"),
        (lambda: ncsn_schedule([1.0, -0.1]), "sigmas"),
        (lambda: ncsn_schedule([]), "sigmas"),
        (lambda: ncsn_from_ve(VPSDE(), 10), "sde"),
        (lambda: ncsn_from_ve(VESDE(), 1), "num_levels"),
        (
            lambda: ddpm_posterior(
                ddpm_from_vp(VPSDE(), 100), jnp.ones((3, 2)), jnp.ones((3, 2)), jnp.ones(3)
            ),
            "i",
        ),
        (
            lambda: ddpm_posterior(
                ddpm_from_vp(VPSDE(), 100), jnp.ones((3, 2)), jnp.ones((2, 2)), jnp.zeros(3, int)
            ),
            "x_0",
        ),
        (
            lambda: exact_eps(ddpm_from_vp(VPSDE(), 100), data.nine_gaussians())(
                jnp.ones((3, 2)), jnp.zeros(2, int)
            ),
            "i",
        ),
    ],
)
def test_bad_input_names_the_argument(make, argument):
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        make()
