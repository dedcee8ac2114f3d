"""EDM's preconditioning, checked against closed forms and the exact mixture denoiser.

- the three conditions that define the coefficients hold: unit input variance, unit target
  variance, and c_skip at the minimum of c_out (in closed form and by Monte Carlo on Gaussian
  data of per-axis std sigma_d);
- for Gaussian data the exact denoiser is c_skip x, so the loss-optimal network output is 0 and
  the loss there is d;
- with ``process_sigmas`` and the ``"snr"`` weight the loss is ``losses.dsm_loss``'s ``"sigma2"``
  loss written for the denoiser; ``score_fn`` gives the exact score of ``EDMProcess``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import data, denoisers, losses, networks
from diffnb import preconditioning as pc
from diffnb.sde import VPSDE, exact_score

SIGMAS = jnp.array([0.002, 0.05, 0.3, 1.0, 4.0, 80.0])
SIGMA_DATA = jnp.array([0.5, 1.7])  # anisotropic: one value per axis


def _gaussian(sigma_data):
    """N(0, diag(sigma_data^2)) as a one-component mixture."""
    sd = np.asarray(sigma_data, np.float64)
    return data.gaussian_mixture(np.zeros((1, sd.size)), np.diag(sd**2)[None], np.ones(1))


def test_coefficients_closed_form():
    c = pc.edm_coefficients(SIGMAS, SIGMA_DATA)
    s, sd = np.asarray(SIGMAS, np.float64)[:, None], np.asarray(SIGMA_DATA, np.float64)[None]
    assert c.c_skip.shape == c.c_out.shape == c.c_in.shape == (6, 2) and c.c_noise.shape == (6,)
    # Condition 1: Var(c_in x) = c_in^2 (sigma_d^2 + sigma^2) = 1.
    np.testing.assert_allclose(np.asarray(c.c_in) ** 2 * (sd**2 + s**2), 1.0, rtol=1e-5)
    # Condition 2: Var(target) = ((1 - c_skip)^2 sigma_d^2 + c_skip^2 sigma^2) / c_out^2 = 1.
    skip, out = np.asarray(c.c_skip, np.float64), np.asarray(c.c_out, np.float64)
    np.testing.assert_allclose(((1 - skip) ** 2 * sd**2 + skip**2 * s**2) / out**2, 1, rtol=1e-4)
    # Condition 3: c_skip minimises c_out^2(c) = (1 - c)^2 sigma_d^2 + c^2 sigma^2 over a grid.
    grid = np.linspace(0.0, 1.0, 100_001)[None, None, :]
    c_out2 = (1 - grid) ** 2 * sd[..., None] ** 2 + grid**2 * s[..., None] ** 2
    np.testing.assert_allclose(grid[0, 0, np.argmin(c_out2, axis=-1)], skip, atol=2e-5)
    np.testing.assert_allclose(np.min(c_out2, axis=-1), out**2, rtol=1e-4)
    np.testing.assert_allclose(c.c_noise, np.log(SIGMAS) / 4, rtol=1e-6)


def test_shared_sigma_data_broadcasts():
    c = pc.edm_coefficients(SIGMAS, 0.5)
    assert c.c_skip.shape == (6, 1)
    per_axis = pc.edm_coefficients(SIGMAS, jnp.array([0.5, 0.5]))
    np.testing.assert_allclose(per_axis.c_out, jnp.broadcast_to(c.c_out, (6, 2)), rtol=1e-6)


@pytest.mark.parametrize("sigma", [0.01, 0.5, 1.7, 20.0])
def test_unit_variances_by_monte_carlo(sigma):
    key_y, key_n = jax.random.split(jax.random.key(0))
    n = 200_000
    y = SIGMA_DATA[None] * jax.random.normal(key_y, (n, 2))
    x = y + sigma * jax.random.normal(key_n, (n, 2))
    c = pc.edm_coefficients(jnp.full((n,), sigma), SIGMA_DATA)
    target = (y - c.c_skip * x) / c.c_out
    # Standard error of a sample variance of unit Gaussians: sqrt(2 / n) = 0.003.
    np.testing.assert_allclose(jnp.var(c.c_in * x, axis=0), 1.0, atol=0.015)
    np.testing.assert_allclose(jnp.var(target, axis=0), 1.0, atol=0.015)


def test_gaussian_exact_denoiser_needs_zero_network_output():
    gauss = _gaussian(SIGMA_DATA)
    x = jax.random.normal(jax.random.key(1), (6, 2)) * 3.0
    exact = denoisers.exact_denoiser(gauss)(x, SIGMAS)
    c = pc.edm_coefficients(SIGMAS, SIGMA_DATA)
    # D(x) = c_skip x for N(0, diag sigma_d^2): the optimal F = (D - c_skip x) / c_out is 0.
    np.testing.assert_allclose((exact - c.c_skip * x) / c.c_out, 0.0, atol=2e-4)


def test_loss_at_the_optimum_is_d_and_grows_away_from_it():
    y = SIGMA_DATA[None] * jax.random.normal(jax.random.key(2), (32 * 4096, 2))
    zero = pc.edm_denoiser(lambda a, rng, u, c: a * u, SIGMA_DATA)  # F = a c_in x
    loss_fn = jax.jit(pc.edm_loss(zero, SIGMA_DATA))
    keys = jax.random.split(jax.random.key(3), 32)
    batches = y.reshape(32, 4096, 2)
    values = {a: np.asarray(jax.vmap(loss_fn, (None, 0, 0))(a, keys, batches)) for a in (0, 0.3)}
    mean, se = values[0].mean(), values[0].std(ddof=1) / np.sqrt(32)
    assert abs(mean - 2.0) < 4 * se + 1e-3  # E||F_target||^2 = d
    assert values[0.3].mean() > mean + 0.05


def test_snr_weight_with_process_sigmas_is_the_dsm_loss(nine):
    vp = VPSDE()
    exact_d = denoisers.exact_denoiser(nine)
    edm = pc.edm_loss(lambda p, r, x, s: exact_d(x, s), 1.0, pc.process_sigmas(vp), "snr")
    dsm = losses.dsm_loss(lambda p, r, x, t: exact_score(vp, nine)(x, t), vp, "sigma2")
    x0 = data.sample(jax.random.key(4), nine, 32 * 2048).reshape(32, 2048, 2)

    def per_batch(fn):
        keys = jax.random.split(jax.random.key(5), 32)
        return np.asarray(jax.jit(jax.vmap(lambda k, b: fn(None, k, b)))(keys, x0), np.float64)

    a, b = per_batch(edm), per_batch(dsm)
    se = np.hypot(a.std(ddof=1), b.std(ddof=1)) / np.sqrt(32)
    assert abs(a.mean() - b.mean()) < 4 * se


def test_score_fn_is_the_exact_score(nine):
    exact_d = denoisers.exact_denoiser(nine)
    score = pc.score_fn(lambda p, r, x, s: exact_d(x, s), None)
    x = jax.random.normal(jax.random.key(6), (8, 2)) * 2.0
    t = jnp.array([0.01, 0.1, 0.3, 0.7, 1.0, 3.0, 10.0, 80.0])
    np.testing.assert_allclose(score(x, t), data.score(nine, x, 1.0, t), rtol=2e-4, atol=1e-5)


def test_lognormal_sigmas_moments():
    draw = jax.jit(pc.lognormal_sigmas(-1.2, 1.2), static_argnums=1)
    log_s = np.log(np.asarray(draw(jax.random.key(7), 100_000)))
    assert abs(log_s.mean() + 1.2) < 0.02 and abs(log_s.std() - 1.2) < 0.02


def test_denoiser_wraps_the_network():
    net = networks.score_network(networks.NetworkConfig(hidden_dims=(16,), embedding_dim=16))
    x = jax.random.normal(jax.random.key(8), (5, 2))
    params = net.init(jax.random.key(9), x, jnp.zeros(5))
    apply = pc.edm_denoiser(net.apply, SIGMA_DATA)
    sigma = jnp.array([0.01, 0.1, 1.0, 10.0, 80.0])
    c = pc.edm_coefficients(sigma, SIGMA_DATA)
    expected = c.c_skip * x + c.c_out * net.apply(params, None, c.c_in * x, c.c_noise)
    np.testing.assert_allclose(apply(params, None, x, sigma), expected, rtol=1e-6)
    # At sigma -> 0 the denoiser returns its input: c_skip -> 1, c_out -> 0.
    tiny = apply(params, None, x, jnp.full((5,), 1e-6))
    np.testing.assert_allclose(tiny, x, atol=1e-4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sigma_data"):
        pc.as_sigma_data([0.5, -1.0])
    with pytest.raises(ValueError, match="p_std"):
        pc.lognormal_sigmas(-1.2, 0.0)
    with pytest.raises(ValueError, match="weighting"):
        pc.edm_loss(lambda p, r, x, s: x, 0.5, weighting="uniform")
    with pytest.raises(ValueError, match="eps"):
        pc.process_sigmas(VPSDE(), eps=2.0)
    with pytest.raises(ValueError, match="process"):
        pc.score_fn(lambda p, r, x, s: x, None, VPSDE())
