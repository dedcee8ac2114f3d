"""The data module: mixtures, their exact noised density and score, and the toy sets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from diffnb import data

# (scale, std) pairs from the data itself to pure noise, as the SDE chapters use them.
NOISE_LEVELS = [(1.0, 0.0), (1.0, 0.3), (0.8, 0.6), (0.1, 1.0), (1.0, 5.0)]


@pytest.fixture(scope="module")
def skewed():
    """A 2-D mixture with full, correlated covariances, to catch diagonal-only shortcuts."""
    return data.gaussian_mixture(
        means=[[0.0, 1.0], [1.5, -1.0], [-1.0, -0.5]],
        covs=[[[0.3, 0.1], [0.1, 0.2]], [[0.05, -0.02], [-0.02, 0.1]], [[0.5, 0.0], [0.0, 0.05]]],
        weights=[0.5, 0.3, 0.2],
    )


@jax.jit
def _distrax_jitted(mixture, x, scale, std):
    reference = data.to_distrax(data.noised(mixture, scale, std))
    return reference.log_prob(x), jax.vmap(jax.grad(reference.log_prob))(x)


def _distrax_log_prob_and_grad(mixture, x, scale, std):
    """log q_t and its jax.grad from distrax, an implementation independent of ours."""
    with jax.numpy_rank_promotion("allow"):  # distrax broadcasts (d,) against (K, d) inside
        return _distrax_jitted(mixture, x, jnp.float32(scale), jnp.float32(std))


def _points(key, n=64):
    return 2.5 * jax.random.normal(key, (n, 2))


def test_nine_gaussians_layout(nine):
    # Written out by hand, not read from the module.
    weights = [0.01351, 0.22145, 0.13097, 0.10856, 0.11172, 0.12327, 0.03514, 0.24330, 0.01209]
    means = [[a, b] for a in (-2, 0, 2) for b in (-2, 0, 2)]
    np.testing.assert_allclose(nine.means, means)
    np.testing.assert_allclose(nine.weights, np.array(weights) / sum(weights), rtol=1e-6)
    np.testing.assert_allclose(nine.covs, np.broadcast_to(np.eye(2) / 16, (9, 2, 2)))


@pytest.mark.parametrize("scale,std", NOISE_LEVELS)
@pytest.mark.parametrize("which", ["nine", "skewed"])
def test_log_prob_and_score_match_distrax(which, scale, std, nine, skewed):
    mixture = nine if which == "nine" else skewed
    x = _points(jax.random.key(1))
    log_p, grad = _distrax_log_prob_and_grad(mixture, x, scale, std)
    np.testing.assert_allclose(data.log_prob(mixture, x, scale, std), log_p, rtol=1e-5, atol=1e-4)
    got = data.score(mixture, x, scale, std)
    np.testing.assert_allclose(got, grad, rtol=1e-4, atol=1e-3 * float(jnp.max(jnp.abs(grad))))


def test_per_point_scale_and_std(skewed):
    """One (scale, std) per point gives what each pair gives on its own."""
    x = _points(jax.random.key(2), n=len(NOISE_LEVELS))
    scale, std = (jnp.array(v) for v in zip(*NOISE_LEVELS, strict=True))
    log_p = data.log_prob(skewed, x, scale, std)
    s = data.score(skewed, x, scale, std)
    for i, (m, sd) in enumerate(NOISE_LEVELS):
        ref_log_p, ref_grad = _distrax_log_prob_and_grad(skewed, x[i : i + 1], m, sd)
        np.testing.assert_allclose(log_p[i], ref_log_p[0], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(s[i], ref_grad[0], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("scale,std", [(1.0, 0.3), (0.5, 0.8), (0.2, 2.0)])
def test_score_matches_finite_differences(skewed, scale, std):
    x = _points(jax.random.key(3), n=16) * 0.5
    h = 1e-2  # float32: truncation h^2 |f'''| / 6 and rounding eps |f| / h are both ~1e-4
    fd = []
    for e in np.eye(2, dtype=np.float32):
        up = data.log_prob(skewed, x + h * e[None], scale, std)
        down = data.log_prob(skewed, x - h * e[None], scale, std)
        fd.append((up - down) / (2 * h))
    s = data.score(skewed, x, scale, std)
    np.testing.assert_allclose(s, np.stack(fd, axis=-1), rtol=2e-3, atol=2e-3)


def test_noised_density_by_quadrature():
    """eq. data-noised, checked without Gaussian algebra: integrate p_0(x0) N(x; m x0, s^2)."""
    w, mu, var = np.array([0.3, 0.7]), np.array([-1.0, 2.0]), np.array([0.2, 0.5])
    mixture = data.gaussian_mixture(mu[:, None], var, w)
    p0 = lambda x0: np.sum(w * stats.norm.pdf(x0, mu, np.sqrt(var)))  # noqa: E731
    x = np.array([-2.0, -0.3, 0.4, 1.7, 3.0])
    for m, s in [(1.0, 0.4), (0.6, 0.8), (0.05, 1.0)]:
        exact = np.exp(data.log_prob(mixture, x[:, None], m, s))
        integrand = lambda x0, xi, m, s: p0(x0) * stats.norm.pdf(xi, m * x0, s)  # noqa: E731
        quad = [integrate.quad(integrand, -10, 10, args=(xi, m, s))[0] for xi in x]
        np.testing.assert_allclose(exact, quad, rtol=1e-5)


def test_sample_moments(skewed):
    n = 200_000
    x = np.asarray(data.sample(jax.random.key(4), skewed, n), dtype=np.float64)
    w, mu, cov = (np.asarray(a, dtype=np.float64) for a in skewed)
    mean = w @ mu
    second = np.einsum("k,kij->ij", w, cov + mu[:, :, None] * mu[:, None, :])
    true_cov = second - np.outer(mean, mean)
    se = np.sqrt(np.diag(true_cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(x.T), true_cov, atol=0.01)


def test_entropy_of_nine_gaussians(nine):
    """H = -E log p(X) = 1.9822 nats, by Monte Carlo with a 5-standard-error band."""
    x = data.sample(jax.random.key(5), nine, 200_000)
    log_p = np.asarray(data.log_prob(nine, x), dtype=np.float64)
    se = log_p.std() / np.sqrt(log_p.size)
    assert abs(-log_p.mean() - 1.9822) < 5 * se


def test_toys_are_where_they_claim():
    key_moons, key_board, key_ring = jax.random.split(jax.random.key(6), 3)
    board = np.asarray(data.checkerboard(key_board, 4000))
    cell = np.floor(board + 2.0).astype(int)
    assert board.shape == (4000, 2) and np.all(np.abs(board) <= 2.0)
    assert np.all(cell.sum(-1) % 2 == 0)  # only dark squares
    ring = np.asarray(data.ring(key_ring, 4000, radius=1.5, width=0.1))
    radius = np.linalg.norm(ring, axis=-1)
    assert abs(radius.mean() - 1.5) < 0.01 and abs(radius.std() - 0.1) < 0.01
    moons = np.asarray(data.two_moons(key_moons, 4000, noise=0.0))
    assert np.all(np.abs(moons) < 2.5)
    assert abs(moons[:, 0].mean()) < 0.05 and abs(moons[:, 1].mean()) < 0.05


GOOD = dict(means=[[0.0, 0.0], [1.0, 1.0]], covs=[0.1, 0.2], weights=[0.4, 0.6])


@pytest.mark.parametrize(
    "change,name",
    [
        (dict(means=[0.0, 1.0]), "means"),
        (dict(means=[[0.0, np.nan], [1.0, 1.0]]), "means"),
        (dict(weights=[0.4, 0.3, 0.3]), "weights"),
        (dict(weights=[-0.2, 1.2]), "weights"),
        (dict(weights=[0.4, 0.5]), "weights"),
        (dict(covs=[0.1, 0.2, 0.3]), "covs"),
        (dict(covs=np.ones((2, 3, 3))), "covs"),
        (dict(covs=[0.1, -0.2]), "covs"),
        (dict(covs=[[[1.0, 2.0], [2.0, 1.0]], np.eye(2)]), "covs"),  # eigenvalue -1
        (dict(covs=[[[1.0, 0.5], [0.0, 1.0]], np.eye(2)]), "covs"),  # not symmetric
    ],
)
def test_gaussian_mixture_rejects_bad_input(change, name):
    with pytest.raises(ValueError, match=name):
        data.gaussian_mixture(**{**GOOD, **change})


def test_functions_reject_bad_input(nine):
    x = jnp.zeros((5, 2))
    with pytest.raises(ValueError, match="x"):
        data.log_prob(nine, jnp.zeros((5, 3)))
    with pytest.raises(ValueError, match="x"):
        data.score(nine, x.at[2, 1].set(jnp.nan))
    with pytest.raises(ValueError, match="std"):
        data.score(nine, x, 1.0, jnp.ones(4))
    with pytest.raises(ValueError, match="scale"):
        data.log_prob(nine, x, jnp.ones((5, 1)), 0.5)
    with pytest.raises(ValueError, match="n"):
        data.sample(jax.random.key(0), nine, 0)
    with pytest.raises(ValueError, match="width"):
        data.ring(jax.random.key(0), 10, width=-1.0)


def test_kl_divergence_of_two_gaussians_matches_its_closed_form():
    """For q = N(mu, s^2 I) and p = N(0, I) in d dimensions,
    KL = (d s^2 + |mu|^2 - d) / 2 - d log s; the estimate is within 4 standard errors."""
    mu, s = jnp.array([0.5, -1.0]), 0.7
    q = data.GaussianMixture(weights=jnp.ones(1), means=mu[None], covs=(s**2 * jnp.eye(2))[None])
    exact = (2 * s**2 + float(mu @ mu) - 2) / 2 - 2 * np.log(s)
    log_p = lambda x: jax.scipy.stats.norm.logpdf(x).sum(-1)  # noqa: E731
    kl, se = data.kl_divergence(jax.random.key(3), q, log_p, 50_000)
    assert 0 < se < 0.01 and abs(kl - exact) < 4 * se, (kl, se, exact)
