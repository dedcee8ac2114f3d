"""Scoring generated digits: a reference classifier, the Frechet distance, memorisation.

There is no exact score for images, so samples are scored the way image work does, each number
beside its noise floor (what real held-out images score) and the baselines of
``diffnb.digits``; derived and used in notebooks/digits.md:

* a reference classifier, an MLP with one ReLU hidden layer trained on dequantised training
  images (``train_classifier``); its class probabilities give the label distribution and the
  confidence of samples, its hidden layer the features h(x) of the Frechet distance;
* the Frechet distance between Gaussians fitted to two feature sets (``frechet_distance``),
  eq. ``digits-frechet``, and its floor: the test split against as many training images, over
  several draws (``frechet_floor``);
* memorisation: each image's distance to the nearest image of an equal-size random subset of
  the training set, and the fraction of samples nearer than the median test image
  (``memorisation``).

Images are scaled to [-1, 1] as in ``digits.dequantise``; functions that take images reject
other shapes and values outside [-1, 1] (clip generated samples first).
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import threadpoolctl

from diffnb import digits
from diffnb._checks import check_positive_int

__all__ = [
    "ReferenceClassifier",
    "train_classifier",
    "features",
    "class_probabilities",
    "accuracy",
    "label_tv",
    "frechet_distance",
    "sample_frechet",
    "FrechetFloor",
    "frechet_floor",
    "nearest_train_distance",
    "Memorisation",
    "memorisation",
]


class ReferenceClassifier(NamedTuple):
    """An MLP p(y | x) = softmax(W2^T h(x) + b2) with features h(x) = relu(W1^T x + b1).

    ``w1`` (64, H), ``b1`` (H,), ``w2`` (H, 10), ``b2`` (10,): the weights scikit-learn's
    ``MLPClassifier`` learnt, evaluated here in JAX.
    """

    w1: jax.Array
    b1: jax.Array
    w2: jax.Array
    b2: jax.Array


def train_classifier(
    key: jax.Array,
    train: digits.DigitSplit,
    hidden: int = 64,
    copies: int = 4,
    weight_decay: float = 1e-3,
) -> ReferenceClassifier:
    """Train the reference classifier on ``copies`` dequantised copies of the training split.

    scikit-learn's ``MLPClassifier`` (one hidden layer of ``hidden`` ReLU units, Adam, L2
    penalty ``weight_decay``, seeded from ``key``) learns from x = 2 (v + u) / 17 - 1 with fresh
    u per copy, so it sees continuous images like the ones a generator makes. About 98% test
    accuracy with the defaults (asserted >= 95% in tests/test_digits.py and the chapter).

    Raises:
      ValueError: if ``train`` is not a ``digits.DigitSplit`` or its levels or labels are bad;
        RuntimeError if the optimiser does not converge.
    """
    # scikit-learn is imported where it is used: it takes seconds to import.
    import sklearn.exceptions
    import sklearn.neural_network

    if not isinstance(train, digits.DigitSplit):
        raise ValueError(f"train must be a digits.DigitSplit, got {type(train).__name__}")
    levels = digits.check_levels(train.levels, "train.levels")
    labels = digits.check_labels(train.labels, "train.labels", n=levels.shape[0])
    hidden = check_positive_int(hidden, "hidden")
    copies = check_positive_int(copies, "copies")
    key_noise, key_fit = jax.random.split(key)
    x = jnp.concatenate([digits.dequantise(k, levels) for k in jax.random.split(key_noise, copies)])
    y = np.tile(np.asarray(labels), copies)
    mlp = sklearn.neural_network.MLPClassifier(
        hidden_layer_sizes=(hidden,),
        alpha=weight_decay,
        max_iter=500,
        random_state=digits._seed_from_key(key_fit),
    )
    # One BLAS thread: on small matrices, threads spin-waiting on a busy CPU cost up to 30x.
    with threadpoolctl.threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter("error", sklearn.exceptions.ConvergenceWarning)
        try:
            mlp.fit(np.asarray(x, dtype=np.float64), y)
        except sklearn.exceptions.ConvergenceWarning as err:
            raise RuntimeError(f"the reference classifier did not converge: {err}") from err
    (w1, w2), (b1, b2) = mlp.coefs_, mlp.intercepts_
    as_f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
    return ReferenceClassifier(as_f32(w1), as_f32(b1), as_f32(w2), as_f32(b2))


@jax.jit
def _hidden(classifier, x):
    return jax.nn.relu(x @ classifier.w1 + classifier.b1[None])


@jax.jit
def _log_probs(classifier, x):
    return jax.nn.log_softmax(_hidden(classifier, x) @ classifier.w2 + classifier.b2[None])


def features(classifier: ReferenceClassifier, x) -> jax.Array:
    """The features h(x) = relu(W1^T x + b1) of images x (n, 64) in [-1, 1]: shape (n, H)."""
    return _hidden(classifier, digits.check_images(x))


def class_probabilities(classifier: ReferenceClassifier, x) -> jax.Array:
    """The classifier's p(y | x) for images x (n, 64) in [-1, 1]: shape (n, 10), rows sum to 1.

    Its row maximum is the classifier's confidence in a sample; its argmax the predicted label.
    """
    return jnp.exp(_log_probs(classifier, digits.check_images(x)))


def accuracy(classifier: ReferenceClassifier, x, labels) -> float:
    """The fraction of images whose predicted class (the argmax of p(y | x)) equals ``labels``.

    For class-conditional samples, ``labels`` are the classes asked for.
    """
    x = digits.check_images(x)
    labels = digits.check_labels(labels, n=x.shape[0])
    return float(jnp.mean(jnp.argmax(_log_probs(classifier, x), axis=-1) == labels))


def label_tv(classifier: ReferenceClassifier, x, labels) -> float:
    """Total variation between the predicted-label frequencies of x and the class frequencies
    of ``labels``: 1/2 sum_y |p_hat(y) - p(y)|, in [0, 1].

    ``labels`` are real labels (the test split's, say), and need not be as many as images: an
    unconditional generator should reproduce their class frequencies.
    """
    x = digits.check_images(x)
    labels = digits.check_labels(labels)
    predicted = jnp.argmax(_log_probs(classifier, x), axis=-1)
    p_hat = jnp.bincount(predicted, length=digits.NUM_CLASSES) / x.shape[0]
    p = jnp.bincount(labels, length=digits.NUM_CLASSES) / labels.shape[0]
    return float(0.5 * jnp.sum(jnp.abs(p_hat - p)))


# ---------------------------------------------------------------------------------------------
# The Frechet distance and its noise floor.


def _check_features(f, name):
    f = np.asarray(f, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"{name} must have shape (n, H) with n >= 2, got {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{name} contains NaN or inf")
    return f


def frechet_distance(features_a, features_b) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (n_a, H), (n_b, H):

    FD = |m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^{1/2} C_b C_a^{1/2})^{1/2})

    with sample means m and covariances C (1/(n - 1)); the squared 2-Wasserstein distance
    between N(m_a, C_a) and N(m_b, C_b) (Heusel et al. 2017), notebooks/digits.md,
    eq. ``digits-frechet``. The trace of the square root is the sum of the square roots of the
    eigenvalues of the symmetric C_a^{1/2} C_b C_a^{1/2}. Computed in float64 with NumPy and
    SciPy: in float32 the difference of traces loses digits at the floor's scale. Identical
    feature sets give 0 up to rounding. Biased upwards for finite n, so compare only numbers
    computed with the same n (``frechet_floor`` gives the floor at that n).
    """
    a = _check_features(features_a, "features_a")
    b = _check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b differ in width: {a.shape} vs {b.shape}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with threadpoolctl.threadpool_limits(limits=1):  # small matrices: see train_classifier
        lam, q = scipy.linalg.eigh(cov_a)
        root_a = (q * np.sqrt(np.clip(lam, 0.0, None))) @ q.T
        middle = root_a @ cov_b @ root_a
        eig = scipy.linalg.eigvalsh(0.5 * (middle + middle.T))
    trace_root = np.sum(np.sqrt(np.clip(eig, 0.0, None)))
    fd = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    return float(max(fd, 0.0))


def _check_split(split, name):
    if not isinstance(split, digits.DigitSplit):
        raise ValueError(f"{name} must be a digits.DigitSplit, got {type(split).__name__}")
    return digits.check_levels(split.levels, f"{name}.levels")


def sample_frechet(key: jax.Array, classifier: ReferenceClassifier, x, test) -> float:
    """The Frechet distance between the features of images x and of the dequantised test split.

    ``test`` is a ``digits.DigitSplit`` (the test split), dequantised with ``key``. Use as many
    images x as the test split has, the size at which ``frechet_floor`` measures the floor.
    """
    levels = _check_split(test, "test")
    reference = features(classifier, digits.dequantise(key, levels))
    return frechet_distance(features(classifier, x), reference)


class FrechetFloor(NamedTuple):
    """The Frechet distance of real held-out images, over ``repeats`` draws of size ``n``.

    ``mean`` and ``q95`` (95th percentile) summarise ``values``, one per draw.
    """

    n: int
    repeats: int
    mean: float
    q95: float
    values: np.ndarray


@partial(jax.jit, static_argnames="repeats")
def _floor_features(key, classifier, train_levels, test_levels, repeats):
    """Features of ``repeats`` draws: (repeats, n, H) for training subsets and the test split."""
    n = test_levels.shape[0]

    def one(key_rep):
        key_subset, key_train, key_test = jax.random.split(key_rep, 3)
        subset = jax.random.choice(key_subset, train_levels.shape[0], (n,), replace=False)
        real = digits.dequantise(key_train, train_levels[subset])
        held_out = digits.dequantise(key_test, test_levels)
        return _hidden(classifier, real), _hidden(classifier, held_out)

    return jax.lax.map(one, jax.random.split(key, repeats))


def frechet_floor(
    key: jax.Array,
    classifier: ReferenceClassifier,
    train: digits.DigitSplit,
    test: digits.DigitSplit,
    repeats: int = 20,
) -> FrechetFloor:
    """What a perfect generator would score: the test split against as many training images.

    Each draw dequantises the test split afresh and compares its features with those of a
    fresh random subset of the training split of the same size (without replacement, freshly
    dequantised); the spread over the draws is the Monte Carlo noise of the distance at that
    size. A generator's ``sample_frechet`` is beyond the floor when above ``q95``.
    """
    train_levels = _check_split(train, "train")
    test_levels = _check_split(test, "test")
    repeats = check_positive_int(repeats, "repeats")
    n = test_levels.shape[0]
    if n > train_levels.shape[0]:
        raise ValueError(f"test has {n} images, more than train's {train_levels.shape[0]}")
    real, held_out = _floor_features(key, classifier, train_levels, test_levels, repeats)
    values = [frechet_distance(a, b) for a, b in zip(real, held_out, strict=True)]
    values = np.asarray(values)
    return FrechetFloor(n, repeats, float(values.mean()), float(np.quantile(values, 0.95)), values)


# ---------------------------------------------------------------------------------------------
# Memorisation: distances to the nearest training image.


@jax.jit
def _nearest(x, reference):
    sq = (
        jnp.sum(x**2, axis=1)[:, None] + jnp.sum(reference**2, axis=1)[None] - 2.0 * x @ reference.T
    )
    return jnp.sqrt(jnp.clip(jnp.min(sq, axis=1), 0.0, None))


def nearest_train_distance(key: jax.Array, x, train: digits.DigitSplit, subset_size=None):
    """For each image of x (n, 64), the Euclidean distance to its nearest training image.

    The training images are taken at their cell centres (``digits.centres``), from a random
    subset of ``subset_size`` of them drawn with ``key`` (default: n, an equal-size subset,
    so that a set of real held-out images and a set of samples of the same size are judged
    alike). Returns shape (n,).
    """
    x = digits.check_images(x)
    levels = _check_split(train, "train")
    m = x.shape[0] if subset_size is None else check_positive_int(subset_size, "subset_size")
    if m > levels.shape[0]:
        raise ValueError(f"subset_size={m} exceeds the {levels.shape[0]} training images")
    subset = jax.random.choice(key, levels.shape[0], (m,), replace=False)
    return _nearest(x, digits.centres(levels[subset]))


class Memorisation(NamedTuple):
    """Distances to the nearest image of an equal-size training subset, and their summary.

    ``fraction`` is the fraction of samples nearer than ``threshold``, the median distance of
    the reference (held-out real) images; about 0.5 when the samples are as close to the
    training set as new real images are, near 1 when they copy training images.
    """

    fraction: float
    threshold: float
    sample_distances: jax.Array
    reference_distances: jax.Array


def memorisation(
    key: jax.Array, samples, reference, train: digits.DigitSplit, subset_size=None
) -> Memorisation:
    """Are samples nearer to the training set than held-out real images are?

    ``samples`` (n, 64) and ``reference`` (m, 64, e.g. the dequantised test split) are both
    measured against the same random subset of training images, by default as many as there
    are reference images (``subset_size``). Sizes matter because the nearest of more images is
    nearer: measured against sets of different sizes, samples and real images would not be
    comparable. A sample that copies a training image is caught only when that image is in the
    subset (probability subset_size / n_train), so a larger subset detects copying better;
    with ``subset_size`` = the whole training split, exact copies score a fraction near 1.
    Returns the fraction of samples nearer than the reference's median distance, the median,
    and both sets of distances.
    """
    samples = digits.check_images(samples, "samples")
    reference = digits.check_images(reference, "reference")
    m = reference.shape[0] if subset_size is None else subset_size
    d_samples = nearest_train_distance(key, samples, train, subset_size=m)
    d_reference = nearest_train_distance(key, reference, train, subset_size=m)
    threshold = float(jnp.median(d_reference))
    fraction = float(jnp.mean(d_samples < threshold))
    return Memorisation(fraction, threshold, d_samples, d_reference)
