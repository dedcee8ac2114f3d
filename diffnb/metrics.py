"""Sample-quality metrics: how far is a cloud of generated points from the data law?

Every sampler in the book is scored with these numbers, always against their *noise floor*:
the spread each metric shows when two independent true samples of the same size are
compared. The metrics, their estimators and the floor are explained in notebooks/data.md
(section "Scoring samples", eqs. ``data-mmd``, ``data-energy``, ``data-sw2``, ``data-mode-tv``,
``data-var-ratio``).

All metrics are jitted. Pairwise sums are computed block by block (``lax.map``), so memory
stays at a few MB even for n = 5000, where each metric takes well under a second on a CPU.
The public functions reject NaN or inf samples with a ValueError naming the argument
(outside ``jit``; inside it only shapes are checked).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from diffnb import data
from diffnb._checks import check_positive, check_positive_int, check_samples

__all__ = [
    "SampleScores",
    "NoiseFloor",
    "NINE_GAUSSIANS_FLOOR",
    "mmd2",
    "energy_distance",
    "sliced_wasserstein2",
    "mode_tv",
    "variance_ratio",
    "evaluate",
    "noise_floor",
    "beyond_floor",
]

_BLOCK = 500  # rows per block of a pairwise sum: (500, m) floats live at once


class SampleScores(NamedTuple):
    """The five scores of a sample; lower is better except ``var_ratio`` (best at 1)."""

    mode_tv: jax.Array
    mmd2: jax.Array
    energy: jax.Array
    sw2: jax.Array
    var_ratio: jax.Array


class NoiseFloor(NamedTuple):
    """What the scores look like for true-vs-true samples, over independent repeats.

    ``mean`` and ``q95`` (95th percentile) are per metric. ``var_ratio`` is two-sided, so its
    central 95% interval is kept too: ``var_ratio_low`` (2.5%) and ``var_ratio_high`` (97.5%).
    """

    n: int
    repeats: int
    mean: SampleScores
    q95: SampleScores
    var_ratio_low: float
    var_ratio_high: float


# ---------------------------------------------------------------------------------------------
# Pairwise kernel means, one pass over the pairs for both MMD and energy distance.


def _row_means(a: jax.Array, b: jax.Array, bandwidth) -> tuple[jax.Array, jax.Array]:
    """For each row a_i: mean_j phi_h(a_i, b_j) = mean_j exp(-|a_i - b_j|^2 / (2 h^2)), and
    mean_j |a_i - b_j|.

    Rows go in blocks of ``_BLOCK`` (the last one padded, its extra rows dropped), and the
    squared distance is summed coordinate by coordinate, which XLA fuses into one loop with the
    exp, sqrt and means: no (n, m) matrix is ever stored, and |a_i - a_i| is exactly 0.
    """
    n, d = a.shape
    num_blocks = -(-n // _BLOCK)
    padded = jnp.pad(a, ((0, num_blocks * _BLOCK - n), (0, 0)))

    def block(rows):
        sq = sum((rows[:, k, None] - b[None, :, k]) ** 2 for k in range(d))  # (B, m)
        return jnp.mean(jnp.exp(-sq / (2.0 * bandwidth**2)), -1), jnp.mean(jnp.sqrt(sq), -1)

    k_mean, dist_mean = jax.lax.map(block, padded.reshape(num_blocks, _BLOCK, d))
    return k_mean.reshape(-1)[:n], dist_mean.reshape(-1)[:n]


def _kernel_terms(x, y, bandwidth):
    """(MMD^2 unbiased, energy distance V-statistic) from one sweep of the three pair sets."""
    n, m = x.shape[0], y.shape[0]
    kxx, dxx = _row_means(x, x, bandwidth)
    kyy, dyy = _row_means(y, y, bandwidth)
    kxy, dxy = _row_means(x, y, bandwidth)
    # phi_h(x, x) = 1 exactly, so dropping the diagonal is (n * row mean - 1) / (n - 1).
    mean_kxx = jnp.mean((n * kxx - 1.0) / (n - 1))
    mean_kyy = jnp.mean((m * kyy - 1.0) / (m - 1))
    mmd = mean_kxx + mean_kyy - 2.0 * jnp.mean(kxy)
    energy = 2.0 * jnp.mean(dxy) - jnp.mean(dxx) - jnp.mean(dyy)
    return mmd, energy


@jax.jit
def _mmd2(x, y, bandwidth):
    return _kernel_terms(x, y, bandwidth)[0]


@jax.jit
def _energy(x, y):
    return _kernel_terms(x, y, 1.0)[1]


def _check_pair(x, y, same_n: bool = False):
    x = check_samples(x, "x")
    y = check_samples(y, "y", dim=x.shape[1])
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError(f"x and y need at least 2 points each, got {x.shape} and {y.shape}")
    if same_n and y.shape[0] != x.shape[0]:
        raise ValueError(f"y must have as many points as x ({x.shape[0]}), got {y.shape[0]}")
    return x, y


def mmd2(x: jax.Array, y: jax.Array, bandwidth: float = 0.5) -> jax.Array:
    """Unbiased estimate of MMD^2 between the laws of x (n, d) and y (m, d).

    With the Gaussian kernel phi_h(a, b) = exp(-|a - b|^2 / (2 h^2)), h = ``bandwidth``,

        MMD^2_u = mean_{i != i'} phi_h(x_i, x_i') + mean_{j != j'} phi_h(y_j, y_j')
                  - 2 mean_{i, j} phi_h(x_i, y_j)                               (data-mmd)

    (Gretton et al. 2012). It equals the V-statistic (all pairs, never negative) minus its bias
    [(1 - V_xx) + (1 - V_yy)] / (n - 1); its expectation is 0 when the laws agree, so it is then
    negative about half the time or more; notebooks/data.md, eq. ``data-mmd``. h = 0.5 is twice
    the component std of the nine Gaussians: it resolves the shape of each mode.
    """
    x, y = _check_pair(x, y)
    return _mmd2(x, y, check_positive(bandwidth, "bandwidth"))


def energy_distance(x: jax.Array, y: jax.Array) -> jax.Array:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| as a V-statistic (data-energy).

    Every mean runs over all pairs, the zero diagonal included (Szekely & Rizzo 2013). The
    V-statistic is never negative (it is a squared distance between empirical laws),
    at the price of a small positive bias of order 1/n; notebooks/data.md, eq. ``data-energy``.
    """
    x, y = _check_pair(x, y)
    return _energy(x, y)


@partial(jax.jit, static_argnames="num_projections")
def _sliced_w2(key, x, y, num_projections):
    directions = jax.random.normal(key, (num_projections, x.shape[1]))
    directions = directions / jnp.linalg.norm(directions, axis=-1, keepdims=True)
    px = jnp.sort(x @ directions.T, axis=0)  # (n, P): sorted 1-D projections
    py = jnp.sort(y @ directions.T, axis=0)
    return jnp.mean((px - py) ** 2)


def sliced_wasserstein2(
    key: jax.Array, x: jax.Array, y: jax.Array, num_projections: int = 64
) -> jax.Array:
    """Squared sliced Wasserstein-2 distance between two samples of equal size (data-sw2).

    SW_2^2 = E_u W_2^2(u^T X, u^T Y), u uniform on the unit sphere, estimated with
    ``num_projections`` directions u_p drawn from ``key``. In 1-D, W_2^2 between two equal-size
    empirical laws is the mean squared gap between their sorted values. A pure shift by delta
    gives |delta|^2 / d; notebooks/data.md, eq. ``data-sw2``. Returns the square (units of x^2).
    """
    x, y = _check_pair(x, y, same_n=True)
    return _sliced_w2(key, x, y, check_positive_int(num_projections, "num_projections"))


# ---------------------------------------------------------------------------------------------
# Mixture-aware metrics: assign each point to its nearest component mean.


def _assign(x, means):
    sq = jnp.sum((x[:, None, :] - means[None, :, :]) ** 2, axis=-1)  # (n, K)
    return jnp.argmin(sq, axis=-1)


def distance_to_modes(x: jax.Array, mixture: data.GaussianMixture) -> jax.Array:
    """Each point's distance to the nearest component mean mu_k, shape (n,).

    The chapters count points farther than a few component standard deviations from every
    mode as stranded (notebooks/comparison.md, notebooks/training.md): no metric above
    weights them by how far they went.
    """
    x = _check_mixture_samples(x, mixture, "x")
    return jnp.min(jnp.linalg.norm(x[:, None, :] - mixture.means[None, :, :], axis=-1), axis=1)


@jax.jit
def _mode_tv(x, mixture):
    k = mixture.num_components
    freq = jnp.mean(jax.nn.one_hot(_assign(x, mixture.means), k, dtype=x.dtype), axis=0)
    return 0.5 * jnp.sum(jnp.abs(freq - mixture.weights))


@jax.jit
def _variance_ratio(x, mixture):
    label = _assign(x, mixture.means)
    within = jnp.mean((x - mixture.means[label]) ** 2)  # per coordinate, pooled over modes
    per_mode = jnp.trace(mixture.covs, axis1=-2, axis2=-1) / mixture.dim  # (K,)
    return within / jnp.mean(per_mode[label])


def _check_mixture_samples(x, mixture, name):
    if not isinstance(mixture, data.GaussianMixture):
        raise ValueError(f"mixture must be a data.GaussianMixture, got {type(mixture).__name__}")
    return check_samples(x, name, dim=mixture.dim)


def mode_tv(x: jax.Array, mixture: data.GaussianMixture) -> jax.Array:
    """Total variation between mode frequencies and mixture weights (data-mode-tv).

    Each point goes to its nearest component mean; with hat pi_k the fraction of points in
    mode k, TV = 1/2 sum_k |hat pi_k - pi_k|, in [0, 1]. It sees wrong weights and missing modes,
    and is blind to the shape of each mode; notebooks/data.md, eq. ``data-mode-tv``.
    """
    return _mode_tv(_check_mixture_samples(x, mixture, "x"), mixture)


def variance_ratio(x: jax.Array, mixture: data.GaussianMixture) -> jax.Array:
    """Pooled within-mode variance of x over that of the mixture (data-var-ratio).

    With points assigned to their nearest mean mu_k(i), the numerator is
    1/(n d) sum_i |x_i - mu_k(i)|^2 and the denominator 1/n sum_i tr(Sigma_k(i)) / d, the true
    per-coordinate variance of the modes the points landed in (1/16 for the nine Gaussians).
    A ratio of variances: about 1 for true samples, 2 when every mode's variance is doubled
    (standard deviation sqrt(2) too large), 4 when every mode is twice too wide, below 1 for
    collapsed modes; notebooks/data.md, eq. ``data-var-ratio``. It assumes well separated modes:
    the nearest-mean assignment gives the far tails of a widened mode to its neighbours (1.94,
    not 2, for the nine Gaussians with doubled variance).
    """
    return _variance_ratio(_check_mixture_samples(x, mixture, "x"), mixture)


# ---------------------------------------------------------------------------------------------
# All scores at once, and the floor they are read against.


@partial(jax.jit, static_argnames="num_projections")
def _evaluate(key, samples, mixture, num_projections=64):
    key_ref, key_proj = jax.random.split(key)
    reference = data.sample(key_ref, mixture, samples.shape[0])
    mmd, energy = _kernel_terms(samples, reference, 0.5)
    return SampleScores(
        mode_tv=_mode_tv(samples, mixture),
        mmd2=mmd,
        energy=energy,
        sw2=_sliced_w2(key_proj, samples, reference, num_projections),
        var_ratio=_variance_ratio(samples, mixture),
    )


def evaluate(key: jax.Array, samples: jax.Array, mixture: data.GaussianMixture) -> SampleScores:
    """All five scores of ``samples`` (n, d) against ``mixture``.

    The reference sample for MMD^2 (h = 0.5), energy distance and SW_2^2 has the same size n
    and is drawn from the mixture with ``key``, which also draws the SW projections. Compare
    the result with the floor at the same n (``NINE_GAUSSIANS_FLOOR`` is n = 5000).
    """
    samples = _check_mixture_samples(samples, mixture, "samples")
    if samples.shape[0] < 2:
        raise ValueError(f"samples needs at least 2 points, got {samples.shape[0]}")
    return _evaluate(key, samples, mixture)


@partial(jax.jit, static_argnames=("n", "repeats"))
def _floor_scores(key, mixture, n, repeats):
    def one(key_rep):
        key_sample, key_eval = jax.random.split(key_rep)
        return _evaluate(key_eval, data.sample(key_sample, mixture, n), mixture)

    return jax.lax.map(one, jax.random.split(key, repeats))


def noise_floor(
    key: jax.Array,
    mixture: data.GaussianMixture,
    n: int = 5000,
    repeats: int = 32,
    return_scores: bool = False,
):
    """The noise floor of every score: true samples of size n scored against the mixture.

    Each repeat draws a fresh true sample and evaluates it (with a fresh reference sample),
    so the scores show only Monte Carlo error. Returns a ``NoiseFloor`` (mean and 95th
    percentile per metric, the central 95% interval of ``var_ratio``), and the raw
    ``SampleScores`` of shape (repeats,) when ``return_scores``. Runs ``repeats`` evaluations
    in one jitted ``lax.map``: about 0.1-0.3 s each at n = 5000 on a CPU.
    """
    n = check_positive_int(n, "n")
    repeats = check_positive_int(repeats, "repeats")
    if n < 2:
        raise ValueError(f"n must be at least 2, got {n}")
    if not isinstance(mixture, data.GaussianMixture):
        raise ValueError(f"mixture must be a data.GaussianMixture, got {type(mixture).__name__}")
    scores = jax.tree.map(np.asarray, _floor_scores(key, mixture, n, repeats))
    floor = NoiseFloor(
        n=n,
        repeats=repeats,
        mean=SampleScores(*(float(np.mean(s)) for s in scores)),
        q95=SampleScores(*(float(np.quantile(s, 0.95)) for s in scores)),
        var_ratio_low=float(np.quantile(scores.var_ratio, 0.025)),
        var_ratio_high=float(np.quantile(scores.var_ratio, 0.975)),
    )
    return (floor, scores) if return_scores else floor


def beyond_floor(scores: SampleScores, floor: NoiseFloor) -> SampleScores:
    """Which scores are worse than true samples would plausibly give (booleans per metric).

    mode TV, MMD^2, energy and SW_2^2 are flagged above the floor's 95th percentile;
    the variance ratio outside the floor's central 95% interval.
    """
    flags = [float(s) > float(q) for s, q in zip(scores[:4], floor.q95[:4], strict=True)]
    ratio = float(scores.var_ratio)
    flags.append(not floor.var_ratio_low <= ratio <= floor.var_ratio_high)
    return SampleScores(*flags)


# The floor of the nine Gaussians at n = 5000, measured once with
# ``noise_floor(jax.random.key(0), data.nine_gaussians(), n=5000, repeats=200)`` (about two
# minutes on a 2-core CPU) and rounded to 3 significant digits. notebooks/data.md re-measures it
# with fewer repeats and tests/test_metrics.py checks it against a fresh Monte Carlo run.
NINE_GAUSSIANS_FLOOR = NoiseFloor(
    n=5000,
    repeats=200,
    mean=SampleScores(mode_tv=0.0141, mmd2=-5.97e-6, energy=1.07e-3, sw2=4.43e-3, var_ratio=1.0006),
    q95=SampleScores(mode_tv=0.0218, mmd2=2.60e-4, energy=2.33e-3, sw2=1.03e-2, var_ratio=1.0241),
    var_ratio_low=0.9776,
    var_ratio_high=1.0289,
)
