"""Sample metrics: each estimator against an expected value worked out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffnb import data, metrics

# The weights written out here so the expected values do not come from the module under test.
WEIGHTS = np.array(
    [0.01351, 0.22145, 0.13097, 0.10856, 0.11172, 0.12327, 0.03514, 0.24330, 0.01209]
)
WEIGHTS = WEIGHTS / WEIGHTS.sum()


def _gauss(key, n, d, mean=0.0, std=1.0):
    return mean + std * jax.random.normal(key, (n, d))


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0])
def test_mmd2_matches_closed_form_for_gaussians(shift):
    """N(0, s^2 I) vs N(v, s^2 I), Gaussian kernel of width h, in d dimensions:
    MMD^2 = 2 c (1 - exp(-|v|^2 / (2 (h^2 + 2 s^2)))), c = (h^2 / (h^2 + 2 s^2))^(d/2)."""
    n, d, s, h, reps = 1000, 2, 0.5, 0.5, 8
    v = np.array([shift, 0.0])
    c = (h**2 / (h**2 + 2 * s**2)) ** (d / 2)
    expected = 2 * c * (1 - np.exp(-(v @ v) / (2 * (h**2 + 2 * s**2))))
    values = []
    for key in jax.random.split(jax.random.key(0), reps):
        kx, ky = jax.random.split(key)
        x, y = _gauss(kx, n, d, std=s), _gauss(ky, n, d, mean=jnp.asarray(v)[None], std=s)
        values.append(float(metrics.mmd2(x, y, bandwidth=h)))
    se = np.std(values, ddof=1) / np.sqrt(reps)
    assert abs(np.mean(values) - expected) < 4 * se + 1e-5  # unbiased: no 1/n offset
    if shift > 0:
        assert min(values) > 0


def test_mmd2_is_the_unbiased_u_statistic():
    """Against a float64 brute-force evaluation of the formula, off-diagonal means only."""
    kx, ky = jax.random.split(jax.random.key(1))
    x, y = np.asarray(_gauss(kx, 300, 2)), np.asarray(_gauss(ky, 200, 2, mean=0.2))
    h = 0.7

    def gram(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * h**2))

    def off_diagonal_mean(k):
        return (k.sum() - np.trace(k)) / (k.shape[0] * (k.shape[0] - 1))

    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    expected = off_diagonal_mean(gram(x64, x64)) + off_diagonal_mean(gram(y64, y64))
    expected -= 2 * gram(x64, y64).mean()
    np.testing.assert_allclose(float(metrics.mmd2(x, y, bandwidth=h)), expected, atol=1e-6)


@pytest.mark.parametrize("shift", [0.0, 0.5, 2.0])
def test_energy_distance_matches_closed_form_in_1d(shift):
    """For D ~ N(mu, sigma^2):
    E|D| = sigma sqrt(2/pi) exp(-mu^2 / (2 sigma^2)) + mu (1 - 2 Phi(-mu/sigma)).
    The V-statistic's expectation is 2 E|X-Y| - (1 - 1/n) (E|X-X'| + E|Y-Y'|)."""
    n, reps = 1000, 8

    def mean_abs(mu, sigma):
        return sigma * np.sqrt(2 / np.pi) * np.exp(-(mu**2) / (2 * sigma**2)) + mu * (
            1 - 2 * stats.norm.cdf(-mu / sigma)
        )

    expected = 2 * mean_abs(shift, np.sqrt(2)) - (1 - 1 / n) * 2 * mean_abs(0.0, np.sqrt(2))
    values = []
    for key in jax.random.split(jax.random.key(2), reps):
        kx, ky = jax.random.split(key)
        values.append(float(metrics.energy_distance(_gauss(kx, n, 1), _gauss(ky, n, 1, shift))))
    se = np.std(values, ddof=1) / np.sqrt(reps)
    assert abs(np.mean(values) - expected) < 4 * se + 1e-6
    assert min(values) >= 0.0


def test_energy_distance_is_never_negative_and_zero_on_itself():
    keys = jax.random.split(jax.random.key(3), 10)
    x = _gauss(keys[0], 50, 2)
    assert float(metrics.energy_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    for key in keys[1:]:
        assert float(metrics.energy_distance(x, _gauss(key, 40, 2))) >= 0.0


def test_sliced_wasserstein_of_a_shift():
    """Shifting by v shifts every projection by theta.v: SW2^2 = E (theta.v)^2 = |v|^2 / d."""
    kx, kp = jax.random.split(jax.random.key(4))
    x = _gauss(kx, 200, 2)
    v = jnp.array([[0.6, -0.8]])  # |v| = 1
    assert float(metrics.sliced_wasserstein2(kp, x, x)) == pytest.approx(0.0, abs=1e-10)
    # (theta.v)^2 = cos^2 of a uniform angle has sd 1/sqrt(8): 4 sd over 1024 directions = 0.044
    sw = float(metrics.sliced_wasserstein2(kp, x, x + v, num_projections=1024))
    assert sw == pytest.approx(0.5, abs=0.044)
    # In one dimension every direction is +-1, so the answer is exact.
    x1 = _gauss(kx, 500, 1)
    assert float(metrics.sliced_wasserstein2(kp, x1, x1 + 0.3, 8)) == pytest.approx(0.09, 1e-4)


def test_mode_tv_exact_on_points_at_the_means(nine):
    counts = np.array([0, 30, 10, 10, 10, 10, 0, 30, 0])
    x = np.repeat(np.asarray(nine.means), counts, axis=0) + 0.1  # nearest mean unchanged
    expected = 0.5 * np.abs(counts / counts.sum() - WEIGHTS).sum()
    assert float(metrics.mode_tv(x, nine)) == pytest.approx(expected, abs=1e-6)
    assert float(metrics.variance_ratio(x, nine)) == pytest.approx(0.01 / (1 / 16), rel=1e-4)


def test_mode_tv_and_variance_ratio_of_true_and_wrong_samples(nine):
    key_true, key_equal, key_wide = jax.random.split(jax.random.key(5), 3)
    n = 20_000
    true = data.sample(key_true, nine, n)
    assert float(metrics.mode_tv(true, nine)) < 0.02  # floor at n=20000 is about half n=5000's
    assert abs(float(metrics.variance_ratio(true, nine)) - 1) < 4 * np.sqrt(2 / (2 * n))

    equal = data.gaussian_mixture(nine.means, 1 / 16, np.full(9, 1 / 9))
    by_hand = 0.5 * np.abs(1 / 9 - WEIGHTS).sum()  # 0.2752
    tv = float(metrics.mode_tv(data.sample(key_equal, equal, n), nine))
    assert tv == pytest.approx(by_hand, abs=0.01)

    wide = data.gaussian_mixture(nine.means, 2 / 16, nine.weights / nine.weights.sum())
    ratio = float(metrics.variance_ratio(data.sample(key_wide, wide, n), nine))
    assert ratio == pytest.approx(2.0, abs=0.05)  # nearest-mean tails cut 1e-3 off at 2x


def test_evaluate_and_beyond_floor(nine):
    key_sample, key_eval = jax.random.split(jax.random.key(6))
    shifted = data.sample(key_sample, nine, 5000) + jnp.array([[0.3, 0.0]])
    scores = metrics.evaluate(key_eval, shifted, nine)
    assert isinstance(scores, metrics.SampleScores)
    flags = metrics.beyond_floor(scores, metrics.NINE_GAUSSIANS_FLOOR)
    assert flags.mmd2 and flags.energy and flags.sw2
    # the shift adds 0.3^2 to |x - mu|^2, 0.045 per coordinate: ratio 1 + 0.045 / (1/16) = 1.72
    assert float(scores.var_ratio) == pytest.approx(1 + 0.045 * 16, abs=0.05)


@pytest.mark.long
def test_stored_floor_matches_a_fresh_monte_carlo_run(nine):
    floor, scores = metrics.noise_floor(
        jax.random.key(7), nine, n=5000, repeats=12, return_scores=True
    )
    stored = metrics.NINE_GAUSSIANS_FLOOR
    for name, values in scores._asdict().items():
        se = np.std(values, ddof=1) / np.sqrt(len(values))
        assert abs(getattr(floor.mean, name) - getattr(stored.mean, name)) < 4 * se, name
    # The reference values from issue 2, measured independently.
    assert stored.q95.mode_tv == pytest.approx(0.022, abs=0.002)
    assert stored.q95.mmd2 == pytest.approx(2.9e-4, abs=0.5e-4)
    assert stored.var_ratio_low == pytest.approx(0.969, abs=0.01)
    assert stored.var_ratio_high == pytest.approx(1.019, abs=0.012)


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda x, y, m, k: metrics.mmd2(x, y), "x"),
        (lambda x, y, m, k: metrics.mmd2(y, x), "y"),
        (lambda x, y, m, k: metrics.energy_distance(y, x), "y"),
        (lambda x, y, m, k: metrics.sliced_wasserstein2(k, y, x), "y"),
        (lambda x, y, m, k: metrics.mode_tv(x, m), "x"),
        (lambda x, y, m, k: metrics.variance_ratio(x, m), "x"),
        (lambda x, y, m, k: metrics.evaluate(k, x, m), "samples"),
    ],
)
def test_metrics_reject_nan(call, name, nine):
    bad = jnp.zeros((10, 2)).at[3, 0].set(jnp.nan)
    good = jnp.zeros((10, 2))
    with pytest.raises(ValueError, match=name):
        call(bad, good, nine, jax.random.key(0))


def test_metrics_reject_bad_arguments(nine):
    x, key = jnp.zeros((10, 2)), jax.random.key(0)
    with pytest.raises(ValueError, match="bandwidth"):
        metrics.mmd2(x, x, bandwidth=0.0)
    with pytest.raises(ValueError, match="y"):
        metrics.sliced_wasserstein2(key, x, jnp.zeros((9, 2)))
    with pytest.raises(ValueError, match="y"):
        metrics.mmd2(x, jnp.zeros((10, 3)))
    with pytest.raises(ValueError, match="num_projections"):
        metrics.sliced_wasserstein2(key, x, x, num_projections=0)
    with pytest.raises(ValueError, match="x"):
        metrics.mode_tv(jnp.zeros((10, 3)), nine)
    with pytest.raises(ValueError, match="repeats"):
        metrics.noise_floor(key, nine, repeats=0)


def test_distance_to_modes_is_the_distance_to_the_nearest_mean():
    mixture = data.nine_gaussians()
    x = jnp.array([[0.0, 0.0], [3.0, 4.0], [-2.0, -2.5], [10.0, 2.0]])
    np.testing.assert_allclose(
        metrics.distance_to_modes(x, mixture), [0.0, np.sqrt(5.0), 0.5, 8.0], rtol=1e-6
    )
    with pytest.raises(ValueError, match="^x"):
        metrics.distance_to_modes(jnp.ones((3, 3)), mixture)
