"""The 8x8 digits: a fixed split, the scaling to [-1, 1], bits per dimension, density baselines.

scikit-learn's handwritten digits are 1,797 grey-scale images of 8 x 8 = 64 pixels, each pixel a
level v in {0, ..., 16}, in 10 classes. The protocol fixed here (derived and used in
notebooks/digits.md) is:

* a stratified train / validation / test split of 1,297 / 200 / 300 images (``load_digits``),
  the same for the same ``seed``;
* uniform dequantisation and scaling, x = 2 (v + u) / 17 - 1 with u ~ U(0, 1) per pixel, so that
  the 17 levels tile [-1, 1] with cells of width 2/17 (``dequantise``; back with ``quantise``),
  eq. ``digits-scaling``;
* bits per dimension of a density p_x on x, bpd = -log p_x(x) / (64 ln 2) + log2(17 / 2)
  (``bits_per_dim``), eq. ``digits-bpd``;
* two baselines with exact log-densities, a full-covariance Gaussian (``fit_gaussian``) and a
  Gaussian mixture whose number of components is chosen by the validation split's likelihood
  (``select_mixture``); both are ``data.GaussianMixture`` objects, so ``data.log_prob`` gives
  their densities and ``data.sample`` their samples.

The classifier, the Frechet distance and the memorisation check live in ``diffnb.digits_eval``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import threadpoolctl

from diffnb import data
from diffnb._checks import check_positive_int

__all__ = [
    "DIM",
    "NUM_LEVELS",
    "NUM_CLASSES",
    "BPD_OFFSET",
    "DigitSplit",
    "Digits",
    "load_digits",
    "check_levels",
    "check_images",
    "check_labels",
    "dequantise",
    "centres",
    "quantise",
    "bits_per_dim",
    "fit_gaussian",
    "fit_mixture",
    "MixtureSelection",
    "select_mixture",
    "mixture_bits_per_dim",
]

DIM = 64  # pixels per image, d
NUM_LEVELS = 17  # grey levels v in {0, ..., 16}
NUM_CLASSES = 10  # digits 0..9
BPD_OFFSET = math.log2(NUM_LEVELS / 2)  # log2(17/2) = 3.0875, eq. digits-bpd
_CELL = 2.0 / NUM_LEVELS  # width of one level's cell in x


class DigitSplit(NamedTuple):
    """One part of the split: ``levels`` (n, 64) int32 in 0..16, ``labels`` (n,) int32 in 0..9."""

    levels: jax.Array
    labels: jax.Array

    @property
    def n(self) -> int:
        return self.levels.shape[0]


class Digits(NamedTuple):
    """The three parts of the fixed split (``load_digits``)."""

    train: DigitSplit
    validation: DigitSplit
    test: DigitSplit


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or int(seed) != seed or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def load_digits(seed: int = 0, n_validation: int = 200, n_test: int = 300) -> Digits:
    """The 1,797 digits split into stratified train / validation / test parts.

    Default sizes 1,297 / 200 / 300. Each part keeps the class frequencies of the whole set
    (scikit-learn's stratified ``train_test_split``, test first, then validation from the rest),
    and the split is fixed by the integer ``seed``: the same seed gives the same split on every
    machine and JAX version (NumPy's MT19937 draws it, not a JAX key, so that the protocol of
    notebooks/digits.md does not move when JAX changes its random bits; scikit-learn 1.5.2 and
    1.9.1 give the same split). Within a part the images keep the order of the original data.
    The data ship inside the scikit-learn wheel.

    Raises:
      ValueError: naming ``seed``, ``n_validation`` or ``n_test`` when it is not a valid
        integer, or when the sizes would leave some class without an image in a part.
    """
    # scikit-learn is imported where it is used: it takes seconds to import, and only the
    # digits chapter needs it.
    import sklearn.datasets
    import sklearn.model_selection

    seed = _check_seed(seed)
    n_validation = check_positive_int(n_validation, "n_validation")
    n_test = check_positive_int(n_test, "n_test")
    bunch = sklearn.datasets.load_digits()
    levels = np.asarray(bunch.data, dtype=np.int32)
    labels = np.asarray(bunch.target, dtype=np.int32)
    n = labels.shape[0]
    for size, name in ((n_test, "n_test"), (n_validation, "n_validation")):
        if size < NUM_CLASSES:
            raise ValueError(
                f"{name}={size} leaves a class empty: a stratified part needs at least "
                f"{NUM_CLASSES} images (one per class)"
            )
    if n - n_validation - n_test < NUM_CLASSES:
        raise ValueError(
            f"n_validation={n_validation} and n_test={n_test} leave {n - n_validation - n_test} "
            f"training images of {n}: a class would be empty"
        )
    index = np.arange(n)
    rest, test = sklearn.model_selection.train_test_split(
        index, test_size=n_test, stratify=labels, random_state=seed
    )
    train, validation = sklearn.model_selection.train_test_split(
        rest, test_size=n_validation, stratify=labels[rest], random_state=seed
    )
    parts = []
    names = ("n_validation and n_test leave", "n_validation leaves", "n_test leaves")
    for part, name, what in zip((train, validation, test), names, Digits._fields, strict=True):
        part = np.sort(part)
        counts = np.bincount(labels[part], minlength=NUM_CLASSES)
        if np.any(counts == 0):
            raise ValueError(f"{name} class {int(np.argmin(counts))} empty in the {what} part")
        parts.append(DigitSplit(jnp.asarray(levels[part]), jnp.asarray(labels[part])))
    return Digits(*parts)


# ---------------------------------------------------------------------------------------------
# Checks of images, levels and labels.


def _is_tracer(a) -> bool:
    return isinstance(a, jax.core.Tracer)


def check_levels(levels, name: str = "levels") -> jax.Array:
    """Return ``levels`` as an (n, 64) int32 array of grey levels in 0..16, or raise ValueError.

    Outside ``jit`` the values are checked to be whole numbers in 0..16.
    """
    levels = jnp.asarray(levels)
    if levels.ndim != 2 or levels.shape[0] == 0 or levels.shape[1] != DIM:
        raise ValueError(f"{name} must have shape (n, {DIM}) with n >= 1, got {levels.shape}")
    if not _is_tracer(levels):
        values = np.asarray(levels)
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise ValueError(f"{name} must hold whole grey levels 0..{NUM_LEVELS - 1}")
        if values.min() < 0 or values.max() > NUM_LEVELS - 1:
            raise ValueError(
                f"{name} must lie in 0..{NUM_LEVELS - 1}, got values in "
                f"[{values.min():g}, {values.max():g}]"
            )
    return levels.astype(jnp.int32)


def check_images(x, name: str = "x") -> jax.Array:
    """Return ``x`` as an (n, 64) float array of scaled images in [-1, 1], or raise ValueError.

    Generated samples can stray outside [-1, 1]; clip them first (``jnp.clip(x, -1, 1)``), so
    that the clipping is visible where it happens. Outside ``jit`` NaN, inf and values outside
    [-1, 1] are rejected.
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] != DIM:
        raise ValueError(f"{name} must have shape (n, {DIM}) with n >= 1, got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if not _is_tracer(x):
        values = np.asarray(x)
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(values)))} NaN or inf")
        if values.min() < -1 or values.max() > 1:
            raise ValueError(
                f"{name} must lie in [-1, 1], got values in [{values.min():.4g}, "
                f"{values.max():.4g}]; clip generated samples first"
            )
    return x


def check_labels(labels, name: str = "labels", n: int | None = None) -> jax.Array:
    """Return ``labels`` as an (n,) int32 array of classes 0..9, or raise ValueError."""
    labels = jnp.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n,) with n >= 1, got {labels.shape}")
    if n is not None and labels.shape[0] != n:
        raise ValueError(f"{name} must have {n} entries, one per image, got {labels.shape[0]}")
    if not _is_tracer(labels):
        values = np.asarray(labels)
        if np.any(values != np.round(values)) or values.min() < 0 or values.max() >= NUM_CLASSES:
            bad = values[(values != np.round(values)) | (values < 0) | (values >= NUM_CLASSES)]
            raise ValueError(f"{name} must be classes 0..{NUM_CLASSES - 1}, got {bad[0]!r}")
    return labels.astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# Scaling, dequantisation and bits per dimension.


@jax.jit
def _dequantise(key, levels):
    u = jax.random.uniform(key, levels.shape)
    return _CELL * (levels + u) - 1.0


def dequantise(key: jax.Array, levels) -> jax.Array:
    """x = 2 (v + u) / 17 - 1 with u ~ U(0, 1) drawn per pixel: shape (n, 64), in [-1, 1).

    Uniform dequantisation: level v fills the cell [2v/17 - 1, 2(v+1)/17 - 1) of width 2/17
    uniformly, so a density on x is a density on the continuous images; notebooks/digits.md,
    eq. ``digits-scaling``.
    """
    return _dequantise(key, check_levels(levels))


def centres(levels) -> jax.Array:
    """The cell centres x = 2 (v + 1/2) / 17 - 1 of the levels (dequantisation without noise)."""
    return _CELL * (check_levels(levels) + 0.5) - 1.0


def quantise(x) -> jax.Array:
    """Back to levels: v = floor(17 (x + 1) / 2), clipped to 0..16, int32 of shape (n, 64).

    The inverse of ``dequantise`` for every u except within float32 rounding (about 1e-6) of a
    cell's edge, where a pixel can land in the neighbouring level; cell centres come back
    exactly. x = 1 belongs to level 16.
    """
    x = check_images(x)
    v = jnp.floor((x + 1.0) / _CELL)
    return jnp.clip(v, 0, NUM_LEVELS - 1).astype(jnp.int32)


def bits_per_dim(log_prob_x) -> jax.Array:
    """Bits per dimension of dequantised images from log p_x(x) in nats, elementwise.

    bpd = -log p_x(x) / (64 ln 2) + log2(17/2)   (notebooks/digits.md, eq. ``digits-bpd``).

    Why the offset: a model's density is on x, but the data are levels v. With y = v + u the
    dequantised image in level units, x = (2/17) y - 1 is a linear map with Jacobian
    |dx/dy| = (2/17)^64, so p_y(y) = p_x(x) (2/17)^64 and
    -log2 p_y(y) / 64 = -log p_x(x) / (64 ln 2) - log2(2/17). Bits are counted in the units of
    the data, one level per unit, hence log2(17/2) = 3.0875 added per dimension. By Jensen's
    inequality, E_u[-log2 p_y(v + u)] >= -log2 P(v) with P(v) = int p_y(v + u) du the discrete
    probability the model gives the levels, so the average is an upper bound on the model's
    discrete code length (Theis et al. 2016). The uniform density on [-1, 1]^64, p_x = 2^-64,
    gives log2 17 = 4.0875 bits, the cost of 17 equally likely levels.
    """
    return -jnp.asarray(log_prob_x) / (DIM * math.log(2.0)) + BPD_OFFSET


# ---------------------------------------------------------------------------------------------
# Baselines with exact densities: a full-covariance Gaussian and a Gaussian mixture.


def fit_gaussian(levels) -> data.GaussianMixture:
    """The full-covariance Gaussian nearest (in KL) to the dequantised training images.

    Its mean and covariance are those of x = 2 (v + u) / 17 - 1 averaged over u exactly:
    mean of the cell centres, and their (maximum-likelihood, 1/n) covariance plus the
    dequantisation noise (2/17)^2 / 12 I, since u is independent of v with variance 1/12.
    Returned as a one-component ``data.GaussianMixture``; notebooks/digits.md.
    """
    c = np.asarray(centres(levels), dtype=np.float64)
    mean = c.mean(axis=0)
    cov = np.cov(c, rowvar=False, bias=True) + (_CELL**2 / 12.0) * np.eye(DIM)
    return data.gaussian_mixture(mean[None], cov[None], np.ones(1))


def _seed_from_key(key) -> int:
    return int(jax.random.randint(key, (), 0, np.iinfo(np.int32).max))


def fit_mixture(key: jax.Array, levels, num_components: int) -> data.GaussianMixture:
    """A full-covariance Gaussian mixture fitted by EM to the dequantised training images.

    scikit-learn's ``GaussianMixture`` (k-means initialisation seeded from ``key``) runs EM on
    the cell centres with (2/17)^2 / 12 I added to every component's covariance at each M-step
    (its ``reg_covar``): that is what averaging over the dequantisation noise u does to a
    component's covariance when the responsibilities are taken at the centres, and it keeps
    the covariances of always-blank pixels positive. With one component this is
    ``fit_gaussian``. The result is a ``data.GaussianMixture``, so ``data.log_prob`` gives its
    exact log-density on x and ``data.sample`` its samples.
    """
    import sklearn.mixture  # imported here, as in load_digits

    c = np.asarray(centres(levels), dtype=np.float64)
    num_components = check_positive_int(num_components, "num_components")
    if num_components > c.shape[0]:
        raise ValueError(f"num_components={num_components} exceeds the {c.shape[0]} images")
    gm = sklearn.mixture.GaussianMixture(
        n_components=num_components,
        covariance_type="full",
        reg_covar=_CELL**2 / 12.0,
        max_iter=500,
        random_state=_seed_from_key(key),
    )
    # One BLAS thread: on small matrices, threads spin-waiting on a busy CPU cost up to 30x.
    with threadpoolctl.threadpool_limits(limits=1):
        gm.fit(c)
    weights = gm.weights_ / gm.weights_.sum()
    covs = 0.5 * (gm.covariances_ + np.swapaxes(gm.covariances_, 1, 2))
    return data.gaussian_mixture(gm.means_, covs, weights)


def mixture_bits_per_dim(key: jax.Array, mixture: data.GaussianMixture, levels) -> jax.Array:
    """Bits per dimension (n,) of dequantised images under a mixture's exact density.

    The images are dequantised with ``key`` and ``bits_per_dim(data.log_prob(mixture, x))`` is
    returned per image; the mean over the test split is the baseline's score. A Gaussian puts
    some mass outside [-1, 1]^64, so as a density on the dequantised cube it is sub-normalised
    and its bits stay an upper bound.
    """
    if not isinstance(mixture, data.GaussianMixture) or mixture.dim != DIM:
        raise ValueError(f"mixture must be a data.GaussianMixture in {DIM} dimensions")
    return bits_per_dim(data.log_prob(mixture, dequantise(key, levels)))


class MixtureSelection(NamedTuple):
    """The mixture chosen by held-out likelihood, and the scores of every candidate.

    ``mixture`` has ``num_components`` components; ``candidates`` are the numbers tried and
    ``validation_bpd`` their mean bits per dimension on the validation split (same u for all).
    """

    mixture: data.GaussianMixture
    num_components: int
    candidates: tuple[int, ...]
    validation_bpd: tuple[float, ...]


def select_mixture(
    key: jax.Array,
    train_levels,
    validation_levels,
    candidates=(1, 2, 3, 5, 8, 12, 16, 20),
) -> MixtureSelection:
    """Fit a mixture for each number of components and keep the best on the validation split.

    Each candidate K is fitted with ``fit_mixture`` on the training images; the validation
    images are dequantised once (the same u for every K) and the K with the lowest mean bits
    per dimension wins. The test split plays no part, so its bits stay an honest score.
    """
    candidates = tuple(check_positive_int(k, "candidates") for k in candidates)
    if not candidates:
        raise ValueError("candidates must name at least one number of components")
    key_val, key_fit = jax.random.split(key)
    fits, scores = [], []
    for k, key_k in zip(candidates, jax.random.split(key_fit, len(candidates)), strict=True):
        mixture = fit_mixture(key_k, train_levels, k)
        fits.append(mixture)
        scores.append(float(jnp.mean(mixture_bits_per_dim(key_val, mixture, validation_levels))))
    best = int(np.argmin(scores))
    return MixtureSelection(fits[best], candidates[best], candidates, tuple(scores))
