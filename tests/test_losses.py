"""The losses, checked at the exact score of the noised nine Gaussians.

Two properties per loss:
- the exact score (or noise) is a stationary point: scaling it by (1 + a) gives a loss whose
  derivative in a vanishes at a = 0 within Monte Carlo error, and which grows for a != 0;
- its value there is the constant of Vincent's identity, e.g. for lambda = std^2
  E[d - std^2 ||grad log q_t(x_t)||^2], estimated here from independent samples with
  ``data.score`` (not through the loss).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import data, losses, schedules
from diffnb.sde import VESDE, VPSDE, SubVPSDE, exact_score

NUM_BATCHES, BATCH = 32, 512  # Monte Carlo: means over 32 independent batches of 512


def _mc(values):
    values = np.asarray(values, dtype=np.float64)
    return values.mean(), values.std(ddof=1) / np.sqrt(values.size)


def _scaled(fn):
    """A model (1 + a) fn(x, cond), with the scalar a as its parameters."""
    return lambda a, rng, x, cond: (1.0 + a) * fn(x, cond)


@functools.partial(jax.jit, static_argnums=0)
def _value_and_slope(loss_fn, keys, x0):
    """Loss and d loss / d a at a = 0, and the loss at a = -0.3 and 0.3; one value per batch."""
    batches = x0.reshape(NUM_BATCHES, BATCH, -1)
    value, slope = jax.vmap(jax.value_and_grad(loss_fn), (None, 0, 0))(0.0, keys, batches)
    off = jax.vmap(jax.vmap(loss_fn, (None, 0, 0)), (0, None, None))(
        jnp.array([-0.3, 0.3]), keys, batches
    )
    return value, slope, off


def _setups(mixture):
    ncsn = schedules.ncsn_schedule(np.geomspace(1.0, 0.01, 10))
    ddpm = schedules.ddpm_from_vp(VPSDE(), 100)
    vp, ve, subvp = VPSDE(), VESDE(), SubVPSDE()
    score = functools.partial(exact_score, mixture=mixture)
    return {
        "ncsn": losses.ncsn_loss(_scaled(schedules.exact_ncsn_score(mixture)), ncsn),
        "ddpm-simple": losses.ddpm_loss(_scaled(schedules.exact_eps(ddpm, mixture)), ddpm),
        "ddpm-elbo": losses.ddpm_loss(_scaled(schedules.exact_eps(ddpm, mixture)), ddpm, "elbo"),
        "vp-sigma2": losses.dsm_loss(_scaled(score(vp)), vp),
        "ve-sigma2": losses.dsm_loss(_scaled(score(ve)), ve),
        "subvp-sigma2": losses.dsm_loss(_scaled(score(subvp)), subvp),
        "vp-likelihood": losses.dsm_loss(_scaled(score(vp)), vp, "likelihood", eps=1e-2),
    }


@pytest.fixture(scope="module")
def setups(nine):
    return _setups(nine)


@pytest.fixture(scope="module")
def x0(nine):
    return data.sample(jax.random.key(0), nine, NUM_BATCHES * BATCH)


LONG = pytest.mark.long


@pytest.mark.parametrize(
    "name",
    [
        "ncsn",
        "ddpm-simple",
        "vp-sigma2",
        pytest.param("ddpm-elbo", marks=LONG),
        pytest.param("ve-sigma2", marks=LONG),
        pytest.param("subvp-sigma2", marks=LONG),
        pytest.param("vp-likelihood", marks=LONG),
    ],
)
def test_exact_score_is_the_minimiser(setups, x0, name):
    loss_fn = setups[name]
    keys = jax.random.split(jax.random.key(1), NUM_BATCHES)
    values, slopes, off = _value_and_slope(loss_fn, keys, x0)
    slope, slope_se = _mc(slopes)
    assert abs(slope) < 4 * slope_se, (slope, slope_se)
    # The loss is quadratic in a; with the same keys its curvature shows at a = +-0.3.
    assert np.all(np.mean(np.asarray(off) - np.asarray(values), axis=1) > 0)


def _fisher_terms(key, mixture, n, scale, std):
    """d - std^2 ||grad log q(x_t)||^2 per point, for x_t = scale x_0 + std z drawn afresh."""
    key_data, key_noise = jax.random.split(key)
    x0 = data.sample(key_data, mixture, n)
    x_t = scale[:, None] * x0 + std[:, None] * jax.random.normal(key_noise, x0.shape)
    s = data.score(mixture, x_t, scale, std)
    return x0.shape[1] - std**2 * jnp.sum(s**2, axis=1)


N_CONST = 16_384


def _constant_ncsn(key, mixture):
    key_level, key_terms = jax.random.split(key)
    sigma = jnp.asarray(np.geomspace(1.0, 0.01, 10), jnp.float32)
    sigma = sigma[jax.random.randint(key_level, (N_CONST,), 0, 10)]
    return 0.5 * _fisher_terms(key_terms, mixture, N_CONST, jnp.ones(N_CONST), sigma)


def _constant_ddpm(key, mixture):
    key_step, key_terms = jax.random.split(key)
    abar = schedules.ddpm_from_vp(VPSDE(), 100).alpha_bars
    abar = abar[jax.random.randint(key_step, (N_CONST,), 0, 100)]
    return _fisher_terms(key_terms, mixture, N_CONST, jnp.sqrt(abar), jnp.sqrt(1.0 - abar))


def _constant_sde(sde, eps, weight):
    def constant(key, mixture):
        key_time, key_terms = jax.random.split(key)
        t = jax.random.uniform(key_time, (N_CONST,), minval=eps, maxval=sde.T)
        scale, std = sde.marginal(t)
        terms = _fisher_terms(key_terms, mixture, N_CONST, scale, std)
        return terms if weight == "sigma2" else sde.diffusion(t) ** 2 / std**2 * terms

    return constant


@pytest.mark.parametrize(
    ("name", "constant"),
    [
        ("vp-sigma2", _constant_sde(VPSDE(), 1e-5, "sigma2")),
        pytest.param("ncsn", _constant_ncsn, marks=LONG),
        pytest.param("ddpm-simple", _constant_ddpm, marks=LONG),
        pytest.param("ve-sigma2", _constant_sde(VESDE(), 1e-5, "sigma2"), marks=LONG),
        pytest.param("subvp-sigma2", _constant_sde(SubVPSDE(), 1e-5, "sigma2"), marks=LONG),
        pytest.param("vp-likelihood", _constant_sde(VPSDE(), 1e-2, "likelihood"), marks=LONG),
    ],
)
def test_value_at_the_exact_score_is_the_closed_form_constant(setups, x0, nine, name, constant):
    keys = jax.random.split(jax.random.key(2), NUM_BATCHES)
    values, _, _ = _value_and_slope(setups[name], keys, x0)
    got, got_se = _mc(values)
    want, want_se = _mc(jax.jit(constant)(jax.random.key(3), nine))
    assert abs(got - want) < 4 * np.hypot(got_se, want_se), (got, want, got_se, want_se)


def test_elbo_weight_turns_the_posterior_mean_error_into_the_noise_error():
    # L_{t-1} = ||mu_tilde(x_t, x_0) - mu_theta(x_t)||^2 / (2 beta_t) with
    # mu_theta = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t) (Ho et al. 2020).
    schedule = schedules.ddpm_from_vp(VPSDE(), 50)
    key_x, key_z, key_e = jax.random.split(jax.random.key(4), 3)
    i = jnp.arange(50)
    x0 = jax.random.normal(key_x, (50, 2))
    z = jax.random.normal(key_z, (50, 2))
    eps_hat = z + 0.3 * jax.random.normal(key_e, (50, 2))
    abar = np.asarray(schedule.alpha_bars, np.float64)
    beta = np.asarray(schedule.betas, np.float64)
    x_t = np.sqrt(abar)[:, None] * x0 + np.sqrt(1 - abar)[:, None] * z
    mean, _ = schedules.ddpm_posterior(schedule, x_t, x0, i)
    mu_theta = (x_t - (beta / np.sqrt(1 - abar))[:, None] * eps_hat) / np.sqrt(1 - beta)[:, None]
    kl = np.sum((np.asarray(mean) - mu_theta) ** 2, axis=1) / (2 * beta)
    weighted = np.asarray(losses.ddpm_elbo_weights(schedule)) * np.sum((eps_hat - z) ** 2, axis=1)
    np.testing.assert_allclose(weighted, kl, rtol=2e-3)


def test_elbo_weight_of_the_first_step_keeps_full_precision():
    # At t = 1, 1 - abar_1 = beta_1 = 1e-4, so w_1 = 1 / (2 alpha_1) exactly; 1 - abar in
    # float32 would be off by up to 3e-4 relative there.
    schedule = schedules.ddpm_from_vp(VPSDE(0.1, 20.0), 1000)
    beta_1 = float(schedule.betas[0])
    w = np.asarray(losses.ddpm_elbo_weights(schedule))
    np.testing.assert_allclose(w[0], 1.0 / (2.0 * (1.0 - beta_1)), rtol=2e-6)


def test_bad_arguments_are_named(nine):
    ddpm = schedules.ddpm_from_vp(VPSDE(), 50)
    eps_fn = _scaled(schedules.exact_eps(ddpm, nine))
    with pytest.raises(ValueError, match="weighting"):
        losses.ddpm_loss(eps_fn, ddpm, weighting="vlb")
    score = _scaled(exact_score(VPSDE(), nine))
    with pytest.raises(ValueError, match="weighting"):
        losses.dsm_loss(score, VPSDE(), weighting="g2")
    for eps in (0.0, 1.0, -1e-3):
        with pytest.raises(ValueError, match="eps"):
            losses.dsm_loss(score, VPSDE(), eps=eps)


def _vp_log_mass(vp, t):
    """log(e^{B(t)} - 1), an antiderivative of g^2 / std^2 = beta / (1 - e^{-B}) for VP."""
    b = np.asarray(vp.integrated_beta(np.asarray(t, np.float64)), np.float64)
    return np.log(np.expm1(b))


def test_likelihood_times_follow_the_weight():
    """The importance-sampled t of the likelihood weighting has the VP closed-form CDF
    F(t) = [log(e^{B(t)} - 1) - log(e^{B(eps)} - 1)] / Z (notebooks/sde.md, exercise), and
    the density reported with each draw is g^2 / std^2 / Z at that t."""
    vp, eps = VPSDE(), 1e-5
    sampler = losses.likelihood_time_sampler(vp, eps)
    t, density = losses._draw_times(jax.random.key(3), sampler, 200_000, jnp.float32)
    t, density = np.asarray(t, np.float64), np.asarray(density, np.float64)
    assert t.min() >= eps and t.max() <= vp.T
    lo, hi = _vp_log_mass(vp, eps), _vp_log_mass(vp, vp.T)
    np.testing.assert_allclose(float(sampler.cdf[-1]), hi - lo, rtol=1e-3)
    t_sorted = np.sort(t)
    closed = (_vp_log_mass(vp, t_sorted) - lo) / (hi - lo)
    empirical = np.arange(1, t.size + 1) / t.size
    assert np.max(np.abs(closed - empirical)) < 0.005  # Kolmogorov-Smirnov, 1% level ~ 0.0036
    weight = vp.beta(t) / -np.expm1(-np.asarray(vp.integrated_beta(t), np.float64))
    np.testing.assert_allclose(density, weight / (hi - lo), rtol=1e-2)


def test_importance_sampling_keeps_the_loss_and_cuts_its_variance(nine, x0):
    """Both estimators of the likelihood-weighted loss have the same mean; at eps = 1e-5 the
    uniform one is dominated by rare small-t draws, the importance-sampled one is not."""
    vp = VPSDE()
    model = _scaled(exact_score(vp, nine))
    keys = jax.random.split(jax.random.key(4), NUM_BATCHES)
    batches = x0.reshape(NUM_BATCHES, BATCH, -1)
    values = {}
    for flag in (True, False):
        loss_fn = losses.dsm_loss(model, vp, "likelihood", importance_sampling=flag)
        values[flag] = np.asarray(jax.jit(jax.vmap(loss_fn, (None, 0, 0)))(0.0, keys, batches))
    (m_is, se_is), (m_u, se_u) = _mc(values[True]), _mc(values[False])
    assert abs(m_is - m_u) < 4 * np.hypot(se_is, se_u), (m_is, se_is, m_u, se_u)
    assert values[True].std() < values[False].std() / 3
