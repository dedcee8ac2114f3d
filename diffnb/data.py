"""Data sets: Gaussian mixtures with an exact noised density and score, plus 2-D toys.

Every chapter scores its samplers against the data's exact density. For a Gaussian
mixture that density stays in closed form after noising: if x_0 ~ q_0 = sum_k pi_k
N(mu_k, Sigma_k) and x_t = m_t x_0 + sigma_t eps with eps ~ N(0, I), then

    q_t(x) = sum_k pi_k N(x; m_t mu_k, m_t^2 Sigma_k + sigma_t^2 I),     (data-noised)

so log q_t and its score are exact for any (m_t, sigma_t), passed as ``scale`` and ``std``.
Derived in notebooks/data.md, eq. ``data-noised``.
"""

from __future__ import annotations

from typing import NamedTuple

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from diffnb._checks import check_positive, check_positive_int, check_samples

__all__ = [
    "GaussianMixture",
    "gaussian_mixture",
    "nine_gaussians",
    "to_distrax",
    "sample",
    "noised",
    "log_prob",
    "score",
    "two_moons",
    "checkerboard",
    "ring",
]

# Weights of Dirmeier's (2023) nine Gaussians, hard-coded: the original draws them from
# jax.random with key 23, which gives other numbers under jax >= 0.5.
NINE_GAUSSIAN_WEIGHTS = (
    0.01351, 0.22145, 0.13097, 0.10856, 0.11172, 0.12327, 0.03514, 0.24330, 0.01209,
)  # fmt: skip


class GaussianMixture(NamedTuple):
    """A mixture q_0 = sum_k pi_k N(mu_k, Sigma_k) in d dimensions (notebooks/data.md,
    eq. ``data-mixture``): ``weights`` are the pi_k, ``means`` the mu_k, ``covs`` the Sigma_k."""

    weights: jax.Array  # (K,)
    means: jax.Array  # (K, d)
    covs: jax.Array  # (K, d, d)

    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def num_components(self) -> int:
        return self.weights.shape[0]


def gaussian_mixture(means, covs, weights) -> GaussianMixture:
    """Build a Gaussian mixture, checking every argument.

    Args:
      means: (K, d) component means.
      covs: (K, d, d) symmetric positive-definite covariances, or (K,) / scalar variances
        meaning ``var * I``.
      weights: (K,) non-negative weights pi_k that sum to 1.

    Raises:
      ValueError: naming the argument whose shape or value is wrong.
    """
    means = np.asarray(means, dtype=np.float64)
    if means.ndim != 2 or means.shape[0] == 0 or means.shape[1] == 0:
        raise ValueError(f"means must have shape (K, d) with K, d >= 1, got {means.shape}")
    if not np.all(np.isfinite(means)):
        raise ValueError("means must be finite")
    k, d = means.shape

    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (k,):
        raise ValueError(f"weights must have shape ({k},) to match means, got {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be finite and non-negative")
    if abs(weights.sum() - 1.0) > 1e-6:
        raise ValueError(f"weights must sum to 1, they sum to {weights.sum():.8g}")

    covs = np.asarray(covs, dtype=np.float64)
    if covs.ndim <= 1:
        variances = np.broadcast_to(covs, (k,)) if covs.ndim == 0 else covs
        if variances.shape != (k,):
            raise ValueError(f"covs given as variances must have shape ({k},), got {covs.shape}")
        covs = variances[:, None, None] * np.eye(d)
    if covs.shape != (k, d, d):
        raise ValueError(f"covs must have shape ({k}, {d}, {d}), got {covs.shape}")
    if not np.all(np.isfinite(covs)) or not np.allclose(covs, np.swapaxes(covs, 1, 2)):
        raise ValueError("covs must be finite and symmetric")
    if np.any(np.linalg.eigvalsh(covs) <= 0):
        raise ValueError("covs must be positive definite")

    as_f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)  # noqa: E731
    return GaussianMixture(as_f32(weights), as_f32(means), as_f32(covs))


def nine_gaussians() -> GaussianMixture:
    """Dirmeier's (2023) data: nine Gaussians on the grid {-2, 0, 2}^2, covariance I/16.

    Means are in row-major order, x outer and y inner; the weights are hard-coded
    (JAX's random bits change between versions). The mixture's entropy is 1.9822 nats.
    """
    grid = np.array([-2.0, 0.0, 2.0])
    means = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(-1, 2)
    weights = np.array(NINE_GAUSSIAN_WEIGHTS)
    return gaussian_mixture(means, np.full(9, 1.0 / 16.0), weights / weights.sum())


def to_distrax(mixture: GaussianMixture) -> distrax.MixtureSameFamily:
    """The same mixture as a distrax distribution (for sampling and an independent check)."""
    return distrax.MixtureSameFamily(
        mixture_distribution=distrax.Categorical(probs=mixture.weights),
        components_distribution=distrax.MultivariateNormalFullCovariance(
            loc=mixture.means, covariance_matrix=mixture.covs
        ),
    )


def sample(key: jax.Array, mixture: GaussianMixture, n: int) -> jax.Array:
    """Draw ``n`` points, shape (n, d), from the mixture."""
    n = check_positive_int(n, "n")
    key_component, key_noise = jax.random.split(key)
    component = jax.random.choice(
        key_component, mixture.num_components, (int(n),), p=mixture.weights
    )
    chol = jnp.linalg.cholesky(mixture.covs)
    z = jax.random.normal(key_noise, (int(n), mixture.dim))
    return mixture.means[component] + jnp.einsum("nij,nj->ni", chol[component], z)


def noised(mixture: GaussianMixture, scale=1.0, std=0.0) -> GaussianMixture:
    """q_t, the law of m_t x_0 + sigma_t eps, as a mixture; ``scale`` = m_t, ``std`` = sigma_t.

    Components N(m_t mu_k, m_t^2 Sigma_k + sigma_t^2 I) with unchanged weights pi_k, for scalar
    m_t and sigma_t; derived in notebooks/data.md, eq. ``data-noised``.
    """
    if jnp.ndim(scale) != 0 or jnp.ndim(std) != 0:
        raise ValueError("scale and std must be scalars here; log_prob and score take arrays")
    eye = jnp.eye(mixture.dim)
    return GaussianMixture(
        mixture.weights,
        scale * mixture.means,
        scale**2 * mixture.covs + std**2 * eye[None],
    )


def _log_prob_and_score(mixture: GaussianMixture, x, scale, std):
    """(log q_t(x), grad log q_t(x)) per point, eqs. ``data-noised``, ``data-score``.

    ``scale`` = m_t and ``std`` = sigma_t have shape (n,); Sigma_k = Q_k diag(lam_k) Q_k^T.
    """
    lam, q = jnp.linalg.eigh(mixture.covs)  # (K, d), (K, d, d)
    diff = x[:, None, :] - scale[:, None, None] * mixture.means[None]  # (n, K, d)
    rotated = jnp.einsum("kdj,nkd->nkj", q, diff)  # Q_k^T (x - m_t mu_k)
    var = scale[:, None, None] ** 2 * lam[None] + std[:, None, None] ** 2  # eigenvalues of C_k
    quad = jnp.sum(rotated**2 / var, axis=-1)
    log_det = jnp.sum(jnp.log(var), axis=-1)
    log_comp = -0.5 * (quad + log_det + mixture.dim * jnp.log(2 * jnp.pi))
    log_joint = jnp.log(mixture.weights)[None] + log_comp  # log pi_k N(x; m_t mu_k, C_k)
    log_p = logsumexp(log_joint, axis=-1)
    responsibility = jnp.exp(log_joint - log_p[:, None])  # omega_k(x, t), (n, K)
    precision_diff = jnp.einsum("kjd,nkd->nkj", q, rotated / var)  # C_k^{-1} (x - m_t mu_k)
    return log_p, -jnp.einsum("nk,nkj->nj", responsibility, precision_diff)


def _per_point_args(x, scale, std):
    n = x.shape[0]
    out = []
    for value, name in ((scale, "scale"), (std, "std")):
        value = jnp.asarray(value, x.dtype)
        if value.shape not in ((), (n,)):
            raise ValueError(f"{name} must be a scalar or have shape ({n},), got {value.shape}")
        out.append(jnp.broadcast_to(value, (n,)))
    return out


@jax.jit
def _per_point(mixture, x, scale, std):
    return _log_prob_and_score(mixture, x, scale, std)


def log_prob(mixture: GaussianMixture, x: jax.Array, scale=1.0, std=0.0) -> jax.Array:
    """log q_t(x) of the noised mixture m_t x_0 + sigma_t eps, per point, shape (n,).

    ``scale`` = m_t and ``std`` = sigma_t are scalars or one value per point, shape (n,); each
    C_k = m_t^2 Sigma_k + sigma_t^2 I must stay positive definite (sigma_t > 0, or m_t != 0).
    Derived in notebooks/data.md, eq. ``data-noised``. Jit-compatible.
    """
    x = check_samples(x, "x", dim=mixture.dim)
    return _per_point(mixture, x, *_per_point_args(x, scale, std))[0]


def score(mixture: GaussianMixture, x: jax.Array, scale=1.0, std=0.0) -> jax.Array:
    """The exact score grad_x log q_t(x) of the noised mixture, shape (n, d).

    It is -sum_k omega_k(x, t) C_k^{-1} (x - m_t mu_k), the component scores weighted by the
    responsibilities, with ``scale`` = m_t and ``std`` = sigma_t; derived in notebooks/data.md,
    eq. ``data-score``. Its RMS under q_t stays below sqrt(d) / sigma_t (about sqrt(2) / 0.25
    near sigma_t = 0 for the nine Gaussians). Jit-compatible.
    """
    x = check_samples(x, "x", dim=mixture.dim)
    return _per_point(mixture, x, *_per_point_args(x, scale, std))[1]


def two_moons(key: jax.Array, n: int, noise: float = 0.08) -> jax.Array:
    """Two interleaved half circles in roughly [-2, 2]^2, blurred by N(0, noise^2 I)."""
    n = check_positive_int(n, "n")
    if not noise >= 0:
        raise ValueError(f"noise must be non-negative, got {noise}")
    key_side, key_angle, key_noise = jax.random.split(key, 3)
    angle = jax.random.uniform(key_angle, (int(n),), maxval=jnp.pi)
    upper = jax.random.bernoulli(key_side, 0.5, (int(n),))
    x = jnp.where(upper, jnp.cos(angle), 1.0 - jnp.cos(angle))
    y = jnp.where(upper, jnp.sin(angle), 0.5 - jnp.sin(angle))
    points = jnp.stack([x - 0.5, y - 0.25], axis=-1) * 1.6
    return points + noise * jax.random.normal(key_noise, points.shape)


def checkerboard(key: jax.Array, n: int) -> jax.Array:
    """Uniform on the eight dark squares of a 4 x 4 board on [-2, 2]^2 (density 1/8 there)."""
    n = check_positive_int(n, "n")
    key_cell, key_offset = jax.random.split(key)
    dark = jnp.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    cell = jax.random.randint(key_cell, (int(n),), 0, dark.shape[0])
    offset = jax.random.uniform(key_offset, (int(n), 2))
    return dark[cell] + offset - 2.0


def ring(key: jax.Array, n: int, radius: float = 1.5, width: float = 0.1) -> jax.Array:
    """A thin annulus: a one-dimensional set blurred by Gaussian noise of std ``width``."""
    n = check_positive_int(n, "n")
    radius = check_positive(radius, "radius")
    width = check_positive(width, "width")
    key_angle, key_noise = jax.random.split(key)
    angle = jax.random.uniform(key_angle, (int(n),), maxval=2 * jnp.pi)
    points = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return points + width * jax.random.normal(key_noise, points.shape)
