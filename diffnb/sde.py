"""Forward diffusion processes as Itô SDEs, dx = f(x, t) dt + g(t) dw, and what is built on them.

Each process has an affine drift, so its transition kernel is Gaussian and known in closed form,

    q(x_t | x_0) = N(x_t; m_t x_0, sigma_t^2 I),

which is what denoising score matching needs (notation of the book's intro: m_t the mean
coefficient, sigma_t the kernel's standard deviation). With B(t) = int_0^t beta(u) du:

- VE (notebooks/sde.md, eq. ``sde-ve``): f = 0, g = sigma(t) sqrt(2 ln(sigma_max/sigma_min) / T),
  sigma(t) = sigma_min (sigma_max/sigma_min)^(t/T); m_t = 1, sigma_t = sigma(t).
- VP (eq. ``sde-vp``): f = -beta(t) x / 2, g = sqrt(beta(t)); m_t = e^{-B/2},
  sigma_t^2 = 1 - e^{-B}.
- sub-VP (eq. ``sde-subvp``): f = -beta(t) x / 2, g = sqrt(beta(t) (1 - e^{-2B}));
  m_t = e^{-B/2}, sigma_t = 1 - e^{-B} (the std, not the variance).

From any score function s(x, t) ~ grad log q_t(x) the module builds the reverse-time SDE
dx = [f - g^2 s] dt + g dW_bar with dt < 0 (eq. ``sde-reverse``) and the
probability-flow ODE dx/dt = f_tilde = f - g^2 s / 2 (eq. ``sde-pf-ode``).

Conventions: points x are (n, d); times t are (n,) (a scalar is broadcast to every point).
The classes are frozen dataclasses, hence hashable and usable as static arguments of ``jit``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from diffnb import data
from diffnb._checks import check_positive, check_positive_int

__all__ = [
    "SDE",
    "VESDE",
    "VPSDE",
    "SubVPSDE",
    "ReverseSDE",
    "exact_score",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


def _per_point(t, x: jax.Array) -> jax.Array:
    """``t`` as an (n,) array in x's dtype: a scalar is broadcast, an (n,) array is kept."""
    t = jnp.asarray(t, dtype=x.dtype)
    if t.shape not in ((), (x.shape[0],)):
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {t.shape}")
    return jnp.broadcast_to(t, (x.shape[0],))


def _check_points(x) -> jax.Array:
    x = jnp.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must have shape (n, d), got {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _gaussian_log_prob(x: jax.Array, std: float) -> jax.Array:
    """log N(x; 0, std^2 I) per point, shape (n,)."""
    d = x.shape[1]
    return -0.5 * jnp.sum(x**2, axis=1) / std**2 - 0.5 * d * math.log(2 * math.pi * std**2)


def _check_bounds(process, low: str, high: str, equal_ok: bool) -> None:
    """Check that the fields ``low``, ``high`` and ``T`` of a frozen process are positive
    numbers (stored as floats) and that high > low (or >= when ``equal_ok``)."""
    for name in (low, high, "T"):
        object.__setattr__(process, name, check_positive(getattr(process, name), name))
    lo, hi = getattr(process, low), getattr(process, high)
    if hi < lo or (hi == lo and not equal_ok):
        relation = "be >=" if equal_ok else "exceed"
        raise ValueError(f"{high} must {relation} {low}, got {high}={hi}, {low}={lo}")


class SDE(abc.ABC):
    """A forward process dx = f(x, t) dt + g(t) dw on [0, T] with a Gaussian kernel q_0t.

    Subclasses are frozen dataclasses with a field ``T`` and implement ``drift``,
    ``diffusion``, ``marginal``, ``prior_sample`` and ``prior_log_prob``.
    """

    T: float

    @abc.abstractmethod
    def drift(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """f(x, t), shape (n, d)."""

    @abc.abstractmethod
    def diffusion(self, t: jax.Array) -> jax.Array:
        """g(t), shape (n,)."""

    @abc.abstractmethod
    def marginal(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(m_t, sigma_t), each (n,), with q(x_t | x_0) = N(m_t x_0, sigma_t^2 I)."""

    @abc.abstractmethod
    def prior_sample(self, key: jax.Array, n: int, dim: int) -> jax.Array:
        """n draws, shape (n, dim), from the prior p_T that the reverse process starts from."""

    @abc.abstractmethod
    def prior_log_prob(self, x: jax.Array) -> jax.Array:
        """log p_T(x) per point, shape (n,), in nats."""

    def discretize(self, x: jax.Array, t: jax.Array, dt) -> tuple[jax.Array, jax.Array]:
        """One forward step from t to t + dt (dt > 0, scalar or (n,)): x_{t+dt} = x + F + G z.

        Returns (F (n, d), G (n,)). The default is Euler–Maruyama, F = f(x, t) dt and
        G = g(t) sqrt(dt). VE overrides it with NCSN's step and VP with a DDPM step whose
        beta_i telescopes; both carry the marginal at t exactly to the one at t + dt
        (notebooks/sde.md, section "DDPM and NCSN as discretisations").
        """
        x = _check_points(x)
        t, dt = _per_point(t, x), _per_point(dt, x)
        return self.drift(x, t) * dt[:, None], self.diffusion(t) * jnp.sqrt(dt)

    def reverse(self, score_fn: ScoreFn) -> ReverseSDE:
        """The reverse-time SDE driven by ``score_fn`` (notebooks/sde.md, eq. ``sde-reverse``)."""
        return ReverseSDE(self, score_fn)

    def probability_flow(self, score_fn: ScoreFn) -> Callable[[jax.Array, jax.Array], jax.Array]:
        """The probability-flow vector field f_tilde(x, t) = f(x, t) - g(t)^2 s(x, t) / 2.

        Integrating dx/dt = f_tilde from T down to 0 moves p_T to p_0 along the same marginals
        as the SDE (notebooks/sde.md, eq. ``sde-pf-ode``). Returns f_tilde: (n, d), (n,) ->
        (n, d), pure and jit-compatible when ``score_fn`` is.
        """

        def vector_field(x: jax.Array, t: jax.Array) -> jax.Array:
            x = _check_points(x)
            t = _per_point(t, x)
            g = self.diffusion(t)
            return self.drift(x, t) - 0.5 * (g**2)[:, None] * score_fn(x, t)

        return vector_field


@dataclasses.dataclass(frozen=True)
class ReverseSDE:
    """dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) dW_bar, run with dt < 0 from T to 0.

    Only g is shared with the forward SDE; the drift changes (notebooks/sde.md,
    eq. ``sde-reverse``). ``drift`` and ``diffusion`` are the coefficients in this
    convention, so an Euler–Maruyama step of size dt > 0 from t to t - dt is
    x - drift(x, t) dt + diffusion(t) sqrt(dt) z.
    """

    forward: SDE
    score_fn: ScoreFn

    @property
    def T(self) -> float:
        return self.forward.T

    def drift(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """f(x, t) - g(t)^2 s(x, t), shape (n, d)."""
        x = _check_points(x)
        t = _per_point(t, x)
        g = self.forward.diffusion(t)
        return self.forward.drift(x, t) - (g**2)[:, None] * self.score_fn(x, t)

    def diffusion(self, t: jax.Array) -> jax.Array:
        """g(t), shape (n,): the same as the forward SDE's."""
        return self.forward.diffusion(t)

    def discretize(self, x: jax.Array, t: jax.Array, dt) -> tuple[jax.Array, jax.Array]:
        """One reverse-diffusion step from t down to t - dt (dt > 0): x_{t-dt} = x + F + G z.

        With the forward step (F_f, G) = forward.discretize(x, t - dt, dt) that leads into t,
        F = -F_f + G^2 s(x, t): the reverse-diffusion predictor of score_sde. For VP, with
        beta_i = G^2, the mean is (2 - sqrt(1 - beta_i)) x + beta_i s, while DDPM's ancestral
        step has (x + beta_i s) / sqrt(1 - beta_i): they agree to first order in beta_i only.
        Their x coefficients differ by about beta_i^2 / 4, 4.4e-3 at the first of 150 steps
        (notebooks/sde.md, section "Training and sampling", where this is asserted).
        """
        x = _check_points(x)
        t, dt = _per_point(t, x), _per_point(dt, x)
        f, g = self.forward.discretize(x, t - dt, dt)
        return -f + (g**2)[:, None] * self.score_fn(x, t), g


@dataclasses.dataclass(frozen=True)
class VESDE(SDE):
    """Variance exploding: dx = g(t) dw, sigma(t) = sigma_min (sigma_max/sigma_min)^(t/T).

    g(t) = sigma(t) sqrt(2 ln(sigma_max/sigma_min) / T), so d sigma^2/dt = g^2
    (notebooks/sde.md, eq. ``sde-ve``; the limit of NCSN's levels, notebooks/ncsn.md,
    eq. ``ncsn-sigmas``).

    Marginal: as in score_sde, m_t = 1 and sigma_t = sigma(t), not sqrt(sigma(t)^2 -
    sigma_min^2). The process is read as starting from the data already blurred by
    N(0, sigma_min^2 I) at t = 0; the SDE then adds variance sigma(t)^2 - sigma_min^2, which
    is exactly what ``discretize`` does. With sigma_min = 0.01 against the nine Gaussians'
    component std 0.25 the blur changes the component variance by 0.16%.

    Default sigma_max = 10, chosen for ``data.nine_gaussians()`` by Song & Ermon's (2020)
    first rule, sigma_max at least the largest distance between two data points: the corner
    means are 4 sqrt(2) = 5.66 apart and a sample of 20,000 points spans 7.3. The prior
    N(0, sigma_max^2 I) then differs from q_T by KL about 7e-4 nats (Monte Carlo with the
    exact noised density), far below what any sample metric here can see, while
    ln(sigma_max/sigma_min) = 6.9 keeps the number of levels a sampler needs modest.
    """

    sigma_min: float = 0.01
    sigma_max: float = 10.0
    T: float = 1.0

    def __post_init__(self):
        _check_bounds(self, "sigma_min", "sigma_max", equal_ok=False)

    @property
    def log_ratio(self) -> float:
        """ln(sigma_max / sigma_min)."""
        return math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t: jax.Array) -> jax.Array:
        """sigma(t) = sigma_min (sigma_max/sigma_min)^(t/T), elementwise."""
        return self.sigma_min * jnp.exp(jnp.asarray(t) / self.T * self.log_ratio)

    def drift(self, x, t):
        x = _check_points(x)
        return jnp.zeros_like(x)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2.0 * self.log_ratio / self.T)

    def marginal(self, t):
        t = jnp.asarray(t)
        return jnp.ones_like(t), self.sigma(t)

    def prior_sample(self, key, n, dim):
        n, dim = check_positive_int(n, "n"), check_positive_int(dim, "dim")
        return self.sigma_max * jax.random.normal(key, (n, dim))

    def prior_log_prob(self, x):
        return _gaussian_log_prob(_check_points(x), self.sigma_max)

    def discretize(self, x, t, dt):
        """NCSN's step from t to t + dt: F = 0, G = sqrt(sigma(t + dt)^2 - sigma(t)^2).

        Exact: it carries N(x_0, sigma(t)^2 I) to N(x_0, sigma(t + dt)^2 I).
        """
        x = _check_points(x)
        t, dt = _per_point(t, x), _per_point(dt, x)
        g = jnp.sqrt(jnp.maximum(self.sigma(t + dt) ** 2 - self.sigma(t) ** 2, 0.0))
        return jnp.zeros_like(x), g


@dataclasses.dataclass(frozen=True)
class _LinearBeta(SDE):
    """Shared by VP and sub-VP: beta(t) = beta_min + (t/T)(beta_max - beta_min) on [0, T]."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __post_init__(self):
        _check_bounds(self, "beta_min", "beta_max", equal_ok=True)

    def beta(self, t: jax.Array) -> jax.Array:
        """beta(t), elementwise."""
        return self.beta_min + jnp.asarray(t) / self.T * (self.beta_max - self.beta_min)

    def integrated_beta(self, t: jax.Array) -> jax.Array:
        """B(t) = int_0^t beta(u) du = beta_min t + (beta_max - beta_min) t^2 / (2T)."""
        t = jnp.asarray(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T

    def drift(self, x, t):
        x = _check_points(x)
        return -0.5 * self.beta(_per_point(t, x))[:, None] * x

    def prior_sample(self, key, n, dim):
        n, dim = check_positive_int(n, "n"), check_positive_int(dim, "dim")
        return jax.random.normal(key, (n, dim))

    def prior_log_prob(self, x):
        return _gaussian_log_prob(_check_points(x), 1.0)


@dataclasses.dataclass(frozen=True)
class VPSDE(_LinearBeta):
    """Variance preserving: dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw.

    m_t = e^{-B(t)/2}, sigma_t^2 = 1 - e^{-B(t)}; the continuous limit of DDPM
    (notebooks/sde.md, eq. ``sde-vp``; notebooks/ddpm.md, eq. ``ddpm-marginal``). Prior N(0, I).
    """

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t))

    def marginal(self, t):
        b = self.integrated_beta(t)
        return jnp.exp(-0.5 * b), jnp.sqrt(-jnp.expm1(-b))

    def discretize(self, x, t, dt):
        """DDPM's step from t to t + dt: x_{t+dt} = sqrt(1 - b) x + sqrt(b) z.

        Here 1 - b = e^{-(B(t+dt) - B(t))}, so the step carries the VP marginal at t exactly to
        the one at t + dt; Ho et al.'s rule b = beta(t) dt agrees with it to first order only
        (its abar is off by 8.1e-4 at N = 1000, notebooks/sde.md). Returns
        F = (sqrt(1 - b) - 1) x and G = sqrt(b).
        """
        x = _check_points(x)
        t, dt = _per_point(t, x), _per_point(dt, x)
        delta = dt * self.beta(t + 0.5 * dt)  # = B(t + dt) - B(t) for linear beta, no cancellation
        b = -jnp.expm1(-delta)
        return (jnp.exp(-0.5 * delta) - 1.0)[:, None] * x, jnp.sqrt(b)


@dataclasses.dataclass(frozen=True)
class SubVPSDE(_LinearBeta):
    """Sub-VP: dx = -beta(t) x / 2 dt + sqrt(beta(t) (1 - e^{-2 B(t)})) dw.

    m_t = e^{-B(t)/2} and std sigma_t = 1 - e^{-B(t)}, whose variance is below VP's
    at every t (notebooks/sde.md, eq. ``sde-subvp``). Prior N(0, I).
    """

    def diffusion(self, t):
        return jnp.sqrt(self.beta(t) * -jnp.expm1(-2.0 * self.integrated_beta(t)))

    def marginal(self, t):
        b = self.integrated_beta(t)
        return jnp.exp(-0.5 * b), -jnp.expm1(-b)


def exact_score(sde: SDE, mixture: data.GaussianMixture) -> ScoreFn:
    """score_fn(x, t) = grad_x log q_t(x) for data ~ ``mixture`` pushed through ``sde``.

    q_t is the mixture noised as m_t x_0 + sigma_t eps (notebooks/data.md, eq. ``data-noised``),
    with (m_t, sigma_t) = sde.marginal(t) per point. At t = 0 a VP or sub-VP has sigma_t = 0 and
    this is the data's own score. Jit-compatible.
    """

    def score_fn(x: jax.Array, t: jax.Array) -> jax.Array:
        x = _check_points(x)
        return data.score(mixture, x, *sde.marginal(_per_point(t, x)))

    return score_fn
