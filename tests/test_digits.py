"""The digits protocol: split, scaling, bits per dimension, baselines, classifier, metrics.

Expected values are worked out independently of the module: the Jacobian of the scaling by a
per-pixel density in level units, the Gaussian density by SciPy, the Frechet distance of two
known Gaussians in closed form, and the issue's reference figures (Gaussian 2.94 bits per
dimension, uniform log2 17 = 4.09).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sklearn.datasets
from scipy import stats

from diffnb import data, digits, digits_eval


@pytest.fixture(scope="module")
def split():
    return digits.load_digits()


@pytest.fixture(scope="module")
def gaussian(split):
    return digits.fit_gaussian(split.train.levels)


@pytest.fixture(scope="module")
def classifier(split):
    return digits_eval.train_classifier(jax.random.key(0), split.train)


@pytest.fixture(scope="module")
def test_images(split):
    return digits.dequantise(jax.random.key(1), split.test.levels)


# ---------------------------------------------------------------------------------------------
# The split.


def test_split_sizes_stratification_and_determinism(split):
    full = sklearn.datasets.load_digits()
    parts = (split.train, split.validation, split.test)
    assert [p.n for p in parts] == [1297, 200, 300]
    # Every image once: the multiset of (image, label) rows is the data set's.
    rows = np.concatenate([np.concatenate([p.levels, p.labels[:, None]], axis=1) for p in parts])
    expected = np.concatenate([full.data, full.target[:, None]], axis=1).astype(np.int32)
    np.testing.assert_array_equal(np.unique(rows, axis=0), np.unique(expected, axis=0))
    assert rows.shape == expected.shape
    # Stratified: each part's class counts are its size times the class frequency, +-1.
    freq = np.bincount(full.target) / full.target.shape[0]
    for p in parts:
        counts = np.bincount(np.asarray(p.labels), minlength=10)
        assert np.all(np.abs(counts - p.n * freq) <= 1.0), counts
    again = digits.load_digits(seed=0)
    for a, b in zip(parts, again, strict=True):
        np.testing.assert_array_equal(a.levels, b.levels)
    other = digits.load_digits(seed=1)
    assert not np.array_equal(split.test.levels, other.test.levels)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_test": 5}, "n_test"),
        ({"n_validation": 9}, "n_validation"),
        ({"n_validation": 900, "n_test": 890}, "n_validation"),
        ({"n_test": 0}, "n_test"),
        ({"seed": -1}, "seed"),
    ],
)
def test_split_that_empties_a_class_is_rejected(kwargs, name):
    with pytest.raises(ValueError, match=name):
        digits.load_digits(**kwargs)


# ---------------------------------------------------------------------------------------------
# Scaling and bad input.


def test_scaling_round_trip_and_dequantisation_law(split):
    v = split.train.levels
    np.testing.assert_array_equal(digits.quantise(digits.centres(v)), v)
    key = jax.random.key(3)
    x = digits.dequantise(key, v)
    assert float(x.min()) >= -1.0 and float(x.max()) < 1.0
    # The same u, recomputed: only pixels within float32 rounding of a cell edge may move.
    u = np.asarray(jax.random.uniform(key, v.shape))
    moved = np.asarray(digits.quantise(x)) != np.asarray(v)
    assert np.all(np.minimum(u, 1 - u)[moved] < 1e-5)
    np.testing.assert_allclose(np.asarray(x), 2 * (np.asarray(v) + u) / 17 - 1, atol=1e-6)
    # x - centre is U(-1/17, 1/17): mean 0, variance (2/17)^2 / 12.
    r = np.asarray(x - digits.centres(v))
    assert abs(r.mean()) < 1e-3 and abs(r.var() / ((2 / 17) ** 2 / 12) - 1) < 0.01
    np.testing.assert_array_equal(digits.quantise(jnp.ones((1, 64))), 16)


@pytest.mark.parametrize(
    "levels",
    [np.zeros((3, 8, 8)), np.zeros((3, 63)), np.full((2, 64), 17), np.full((2, 64), -1),
     np.full((2, 64), 2.5)],
)  # fmt: skip
def test_bad_levels_are_rejected(levels):
    with pytest.raises(ValueError, match="levels"):
        digits.dequantise(jax.random.key(0), levels)


@pytest.mark.parametrize(
    "x", [np.zeros((3, 8, 8)), np.full((2, 64), 1.01), np.full((2, 64), np.nan), np.zeros((0, 64))]
)
def test_bad_images_are_rejected(x, classifier):
    with pytest.raises(ValueError, match="x"):
        digits_eval.features(classifier, x)
    with pytest.raises(ValueError, match="x"):
        digits.quantise(x)


@pytest.mark.parametrize("labels", [np.array([0, 10]), np.array([-1, 3]), np.array([0.5, 1])])
def test_labels_outside_0_to_9_are_rejected(labels, classifier):
    with pytest.raises(ValueError, match="labels"):
        digits_eval.accuracy(classifier, jnp.zeros((2, 64)), labels)
    with pytest.raises(ValueError, match="labels"):
        digits_eval.label_tv(classifier, jnp.zeros((2, 64)), labels)


# ---------------------------------------------------------------------------------------------
# Bits per dimension.


def test_uniform_density_costs_log2_17_bits():
    # The uniform density on the dequantised cube [-1, 1]^64 is 2^-64.
    bpd = float(digits.bits_per_dim(-64 * math.log(2.0)))
    assert bpd == pytest.approx(math.log2(17), abs=1e-6)
    assert round(bpd, 2) == 4.09


def test_bpd_offset_from_a_density_in_level_units():
    """A per-pixel Gaussian on y = v + u in level units, N(y; mu, s^2), is the Gaussian
    N(x; 2 mu / 17 - 1, (2 s / 17)^2) on x. Its bits counted directly in level units,
    -log2 p_y(y) / 64, must equal bits_per_dim of log p_x: the Jacobian enters only there."""
    rng = np.random.default_rng(0)
    mu, s = rng.uniform(2, 14, 64), rng.uniform(0.5, 3, 64)
    y = rng.uniform(0, 17, (5, 64))
    direct = -stats.norm.logpdf(y, mu, s).sum(axis=1) / (64 * math.log(2.0))
    x = 2 * y / 17 - 1
    log_p_x = stats.norm.logpdf(x, 2 * mu / 17 - 1, 2 * s / 17).sum(axis=1)
    np.testing.assert_allclose(np.asarray(digits.bits_per_dim(log_p_x)), direct, rtol=1e-6)


def test_gaussian_baseline_bits_per_dim(split, gaussian):
    key = jax.random.key(4)
    bpd = digits.mixture_bits_per_dim(key, gaussian, split.test.levels)
    # The density against SciPy's, in float64.
    x = np.asarray(digits.dequantise(key, split.test.levels), dtype=np.float64)
    mvn = stats.multivariate_normal(np.asarray(gaussian.means[0]), np.asarray(gaussian.covs[0]))
    expected = -mvn.logpdf(x) / (64 * math.log(2.0)) + math.log2(17 / 2)
    np.testing.assert_allclose(np.asarray(bpd), expected, atol=2e-4)
    assert float(bpd.mean()) == pytest.approx(2.94, abs=0.03)  # the reference figure
    # The closed-form fit is EM's one-component answer.
    one = digits.fit_mixture(jax.random.key(5), split.train.levels, 1)
    np.testing.assert_allclose(one.means, gaussian.means, atol=1e-5)
    np.testing.assert_allclose(one.covs, gaussian.covs, atol=1e-5)


def test_mixture_baseline_beats_the_gaussian(split, gaussian):
    key = jax.random.key(6)
    mixture = digits.fit_mixture(jax.random.key(7), split.train.levels, 8)
    assert mixture.num_components == 8
    bpd_mix = float(digits.mixture_bits_per_dim(key, mixture, split.test.levels).mean())
    bpd_gauss = float(digits.mixture_bits_per_dim(key, gaussian, split.test.levels).mean())
    assert bpd_mix < bpd_gauss - 0.15
    assert 2.5 < bpd_mix < 2.8


@pytest.mark.long
def test_mixture_selected_on_validation_beats_the_gaussian(split, gaussian):
    sel = digits.select_mixture(jax.random.key(8), split.train.levels, split.validation.levels)
    assert sel.num_components == sel.candidates[int(np.argmin(sel.validation_bpd))]
    assert 1 < sel.num_components < 20  # more components overfit 1,297 images
    assert sel.validation_bpd[0] == pytest.approx(2.94, abs=0.05)  # K = 1, the Gaussian
    key = jax.random.key(9)
    bpd_mix = float(digits.mixture_bits_per_dim(key, sel.mixture, split.test.levels).mean())
    bpd_gauss = float(digits.mixture_bits_per_dim(key, gaussian, split.test.levels).mean())
    assert bpd_mix < bpd_gauss - 0.15


# ---------------------------------------------------------------------------------------------
# The reference classifier and the Frechet distance.


def test_reference_classifier_accuracy(split, classifier, test_images):
    assert digits_eval.accuracy(classifier, test_images, split.test.labels) >= 0.95
    p = digits_eval.class_probabilities(classifier, test_images)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    # The test images reproduce their own class frequencies up to the few errors.
    assert digits_eval.label_tv(classifier, test_images, split.test.labels) < 0.05


def test_frechet_distance_of_known_gaussians():
    """N(0, I) against N(m, diag(s^2)): FD = |m|^2 + sum (1 - s)^2, and 0 for a set itself."""
    rng = np.random.default_rng(1)
    m, s = np.array([0.5, -0.2, 0.0, 1.0]), np.array([1.0, 0.5, 2.0, 1.5])
    a = rng.standard_normal((40_000, 4))
    b = m + s * rng.standard_normal((40_000, 4))
    exact = np.sum(m**2) + np.sum((1 - s) ** 2)
    assert digits_eval.frechet_distance(a, b) == pytest.approx(exact, rel=0.02)
    assert digits_eval.frechet_distance(b, a) == pytest.approx(exact, rel=0.02)
    assert digits_eval.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_floor_is_below_the_gaussian_baseline(split, classifier, gaussian):
    floor = digits_eval.frechet_floor(jax.random.key(10), classifier, split.train, split.test, 5)
    assert floor.n == 300 and floor.values.shape == (5,)
    assert floor.mean <= floor.q95 <= floor.values.max()
    key_sample, key_test = jax.random.split(jax.random.key(11))
    samples = jnp.clip(data.sample(key_sample, gaussian, 300), -1, 1)
    fd_gauss = digits_eval.sample_frechet(key_test, classifier, samples, split.test)
    assert fd_gauss > 1.5 * floor.q95


# ---------------------------------------------------------------------------------------------
# Memorisation.


def test_memorisation_of_held_out_and_copied_images(split, test_images):
    key = jax.random.key(12)
    held_out = digits.dequantise(jax.random.key(13), split.validation.levels)
    mem = digits_eval.memorisation(key, held_out, test_images, split.train)
    assert mem.sample_distances.shape == (200,) and mem.reference_distances.shape == (300,)
    assert abs(mem.fraction - 0.5) < 0.12
    # Copies of training images: caught when their original is in the subset.
    copies = digits.dequantise(jax.random.key(14), split.train.levels[:300])
    whole = digits_eval.memorisation(key, copies, test_images, split.train, subset_size=1297)
    assert whole.fraction > 0.95
    equal = digits_eval.memorisation(key, copies, test_images, split.train)
    assert 0.5 < equal.fraction < whole.fraction
