"""Denoising score-matching losses for NCSN, DDPM and the score SDEs.

Each factory returns ``loss_fn(params, key, batch) -> scalar``, a pure function that the
training loop differentiates. ``batch`` is (n, d) clean data x_0. The model is a function
``apply(params, rng, x (n, d), cond (n,))`` (see ``diffnb.networks``): a score for NCSN
(cond = sigma) and the SDEs (cond = t), a noise prediction for DDPM (cond = step i). ``rng``
is a fresh key, used by the model only for dropout.

All three losses are Monte Carlo estimates of a weighted denoising objective. Because
grad log q(x_t | x_0) = -z / std for x_t = scale x_0 + std z, each one regresses the model
on the injected noise z, and its minimiser is the exact score of the noised data
(Vincent 2011).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "ncsn_loss",
    "ddpm_loss",
    "ddpm_elbo_weights",
    "dsm_loss",
    "TimeSampler",
    "likelihood_time_sampler",
    "drop_labels",
    "cfg_dsm_loss",
    "classifier_loss",
]


def _sum_sq(a: jax.Array) -> jax.Array:
    return jnp.sum(jnp.square(a), axis=-1)


def ncsn_loss(apply, schedule):
    """NCSN loss with lambda(sigma) = sigma^2, levels drawn uniformly.

        L(theta) = E_{i ~ U{1..L}} E_{x_0, eps} 1/2 sigma_i^2
                       || s_theta(x_0 + sigma_i eps, sigma_i) + eps / sigma_i ||^2
                 = E 1/2 || sigma_i s_theta(x~, sigma_i) + eps ||^2,

    with eps ~ N(0, I) the kernel noise, derived in notebooks/ncsn.md, eq. ``ncsn-loss``
    (Song & Ermon 2019, eqs. 5-6; sigma^2 is their weight, which also equals Song et al.'s
    (2021) 1 / E||grad log q(x~ | x_0)||^2 up to the constant 1 / d). At the exact score its
    value is the floor 1/2 E_i [d - sigma_i^2 E||grad log q_sigma_i(x~)||^2], eq.
    ``ncsn-loss-floor``.

    Args:
      apply: model ``apply(params, rng, x, sigma) -> score (n, d)``.
      schedule: an ``NCSNSchedule``; its ``sigmas`` (L,) are the noise levels.
    """
    sigmas = jnp.asarray(schedule.sigmas)

    def loss_fn(params, key, batch):
        key_level, key_noise, key_model = jax.random.split(key, 3)
        n = batch.shape[0]
        level = jax.random.randint(key_level, (n,), 0, sigmas.shape[0])
        sigma = sigmas[level]
        eps = jax.random.normal(key_noise, batch.shape, batch.dtype)
        x_noisy = batch + sigma[:, None] * eps
        score = apply(params, key_model, x_noisy, sigma)
        return 0.5 * jnp.mean(_sum_sq(sigma[:, None] * score + eps))

    return loss_fn


def ddpm_elbo_weights(schedule) -> jax.Array:
    """ELBO weights lambda_i = beta_i^2 / (2 nu_i^2 alpha_i (1 - abar_i)) with nu_i^2 = beta_i.

    The weight of the noise-prediction error of step i in the ELBO (notebooks/ddpm.md, eq.
    ``ddpm-eps-weight``). With the ancestral variance nu_i^2 = beta_i (the ``variance="beta"``
    sampler), lambda_i = beta_i / (2 alpha_i (1 - abar_i)) is finite for every i. At i = 1 it
    is also the weight of L_0 = -log N(x_0; mu_theta(x_1, 1), beta_1 I) in eps form, up to a
    constant, so the sum over i = 1..N covers L_0 .. L_{N-1}; L_N has no parameters and is
    dropped (eq. ``ddpm-elbo``). Shape (N,); index i - 1 holds step i.
    """
    return schedule.betas / (2.0 * schedule.alphas * schedule.one_minus_alpha_bars)


def ddpm_loss(apply, schedule, weighting: str = "simple"):
    """DDPM noise-prediction loss, steps i drawn uniformly (0-based indices 0..N-1).

    With x_i = sqrt(abar_i) x_0 + sqrt(1 - abar_i) eps (``z`` in the code):

    - ``"simple"``: L_simple = E_{i, x_0, eps} || eps - eps_theta(x_i, i) ||^2 (Ho et al. 2020,
      eq. 14), notebooks/ddpm.md, eq. ``ddpm-simple``.
    - ``"elbo"``: sum_{i=1}^N lambda_i E || eps - eps_theta(x_i, i) ||^2 = N E_i [lambda_i ||.||^2],
      with the weights of ``ddpm_elbo_weights``; this is the negative ELBO in nats up to terms
      without parameters, notebooks/ddpm.md, eqs. ``ddpm-elbo`` and ``ddpm-eps-weight``. Its
      Monte Carlo variance is far larger than that of L_simple, because lambda_i is largest at
      small i.

    Args:
      apply: model ``apply(params, rng, x, i) -> eps (n, d)``, with i (n,) integer steps.
      schedule: a ``DDPMSchedule``.
      weighting: ``"simple"`` or ``"elbo"``.
    """
    if weighting not in ("simple", "elbo"):
        raise ValueError(f"weighting must be 'simple' or 'elbo', got {weighting!r}")
    alpha_bars, one_minus = schedule.alpha_bars, schedule.one_minus_alpha_bars
    num_steps = alpha_bars.shape[0]
    if weighting == "simple":
        weights = jnp.ones(num_steps, alpha_bars.dtype)
    else:
        weights = num_steps * ddpm_elbo_weights(schedule)

    def loss_fn(params, key, batch):
        key_step, key_noise, key_model = jax.random.split(key, 3)
        n = batch.shape[0]
        step = jax.random.randint(key_step, (n,), 0, num_steps)
        z = jax.random.normal(key_noise, batch.shape, batch.dtype)
        x_t = jnp.sqrt(alpha_bars[step])[:, None] * batch + jnp.sqrt(one_minus[step])[:, None] * z
        eps = apply(params, key_model, x_t, step)
        return jnp.mean(weights[step] * _sum_sq(eps - z))

    return loss_fn


class TimeSampler(NamedTuple):
    """A piecewise-linear inverse CDF for drawing t with density p(t) proportional to w(t).

    ``times`` (K,) is a grid on [eps, T]; ``cdf`` (K,) is the unnormalised cumulative integral
    of w on it, with ``cdf[-1]`` = Z = int_eps^T w(t) dt.
    """

    times: jax.Array
    cdf: jax.Array


def likelihood_time_sampler(sde, eps: float = 1e-5, num_points: int = 4096) -> TimeSampler:
    """Tabulate w(t) = g(t)^2 / std(t)^2 on [eps, T] for importance sampling of t.

    The likelihood weighting lambda = g^2 multiplies || std s_theta + z ||^2 by w(t), which
    grows like 1 / t near 0 for VP and sub-VP (notebooks/sde.md, eq.
    ``sde-likelihood-weighting``). Drawing t with density p(t) proportional to w(t), instead
    of uniformly, makes every term of the loss of the same size (Song et al. 2021b, sec. 5).
    The grid is uniform in log t, where w(t) t is smooth, and integrated by trapezoids.
    """
    log_t = jnp.linspace(math.log(eps), math.log(sde.T), num_points)
    times = jnp.exp(log_t)
    _, std = sde.marginal(times)
    w_dt = jnp.square(sde.diffusion(times) / std) * times  # w(t) dt / d(log t)
    segments = 0.5 * (w_dt[1:] + w_dt[:-1]) * jnp.diff(log_t)
    return TimeSampler(times, jnp.concatenate([jnp.zeros(1), jnp.cumsum(segments)]))


def _draw_times(key: jax.Array, sampler: TimeSampler, n: int, dtype) -> tuple[jax.Array, jax.Array]:
    """t ~ p (n,) by inverting the piecewise-linear CDF, and p(t) itself, which is constant on
    each grid segment: E_p[f(t) / p(t)] = int f dt holds exactly, whatever the grid."""
    times, cdf = sampler
    v = jax.random.uniform(key, (n,), dtype, maxval=cdf[-1])
    i = jnp.clip(jnp.searchsorted(cdf, v, side="right") - 1, 0, times.shape[0] - 2)
    mass, width = cdf[i + 1] - cdf[i], times[i + 1] - times[i]
    t = times[i] + (v - cdf[i]) / mass * width
    return t, (mass / width) / cdf[-1]


def dsm_loss(
    apply, sde, weighting: str = "sigma2", eps: float = 1e-5, importance_sampling: bool = True
):
    """Continuous denoising score matching, averaged over t in [eps, T].

        L(theta) = 1/(T - eps) int_eps^T lambda(t) E_{x_0,z} ||s_theta(x_t, t) + z / std(t)||^2 dt,
        x_t = scale(t) x_0 + std(t) z,   (scale, std) = sde.marginal(t),

    derived in notebooks/sde.md, eq. ``sde-dsm`` (Song et al. 2021, eq. 7), with

    - ``"sigma2"``: lambda(t) = std(t)^2, so L = E_{t ~ U(eps, T)} || std s_theta + z ||^2; at
      the exact score its value is E_t [d - std^2 E||grad log q_t(x_t)||^2];
    - ``"likelihood"``: lambda(t) = g(t)^2 (Song et al. 2021b), for which
      (T - eps) / 2 * L bounds the KL divergence from the data up to a constant. With
      ``importance_sampling`` (the default) t is drawn with density proportional to
      g^2 / std^2 (``likelihood_time_sampler``) and each term reweighted by the ratio of
      densities, which leaves the expectation unchanged and removes the 1 / t spikes that a
      uniform t gives the per-batch loss; False draws t ~ U(eps, T).

    Args:
      apply: model ``apply(params, rng, x, t) -> score (n, d)``.
      sde: an ``SDE`` with ``marginal``, ``diffusion`` and ``T``.
      weighting: ``"sigma2"`` or ``"likelihood"``.
      eps: smallest time, in (0, T).
      importance_sampling: for ``"likelihood"``, draw t proportionally to the weight. The
        ``"sigma2"`` weight is already flat in this sense, so there t is always uniform.
    """
    if weighting not in ("sigma2", "likelihood"):
        raise ValueError(f"weighting must be 'sigma2' or 'likelihood', got {weighting!r}")
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must be in (0, T = {sde.T}), got {eps}")
    if not isinstance(importance_sampling, bool):
        raise ValueError(f"importance_sampling must be True or False, got {importance_sampling!r}")
    sampler = None
    if weighting == "likelihood" and importance_sampling:
        sampler = likelihood_time_sampler(sde, eps)

    def loss_fn(params, key, batch):
        key_time, key_noise, key_model = jax.random.split(key, 3)
        n = batch.shape[0]
        if sampler is None:
            t = jax.random.uniform(key_time, (n,), batch.dtype, minval=eps, maxval=sde.T)
            density = jnp.full((n,), 1.0 / (sde.T - eps), batch.dtype)
        else:
            t, density = _draw_times(key_time, sampler, n, batch.dtype)
        scale, std = sde.marginal(t)
        z = jax.random.normal(key_noise, batch.shape, batch.dtype)
        x_t = scale[:, None] * batch + std[:, None] * z
        score = apply(params, key_model, x_t, t)
        per_point = _sum_sq(std[:, None] * score + z)
        if weighting == "likelihood":
            weight = jnp.square(sde.diffusion(t) / std) / ((sde.T - eps) * density)
            per_point = weight * per_point
        return jnp.mean(per_point)

    return loss_fn


def drop_labels(key: jax.Array, k: jax.Array, num_classes: int, drop_prob) -> jax.Array:
    """Labels k (n,) with each replaced by the null label ``num_classes`` with probability
    ``drop_prob``, independently (label dropout of classifier-free guidance)."""
    drop = jax.random.bernoulli(key, drop_prob, k.shape)
    return jnp.where(drop, num_classes, k)


def cfg_dsm_loss(apply, sde, num_classes: int, drop_prob: float = 0.1, **dsm_kwargs):
    """Classifier-free-guidance training: ``dsm_loss`` of a labelled model whose labels are
    dropped to the null label with probability ``drop_prob`` (Ho & Salimans 2022).

    One network so learns both s(x, t, k) ~ grad log p_t(x | k) and, with the null label
    k = num_classes, s(x, t, null) ~ grad log p_t(x). The batch is ``{"x": (n, d), "k": (n,)}``;
    ``apply(params, rng, x, t, k)`` (``networks.with_labels``); ``dsm_kwargs`` go to
    ``dsm_loss``.
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes}")
    if not 0.0 <= float(drop_prob) <= 1.0:
        raise ValueError(f"drop_prob must be in [0, 1], got {drop_prob}")
    dsm_loss(lambda p, r, x, t: x, sde, **dsm_kwargs)  # checks the keyword arguments now

    def loss_fn(params, key, batch):
        key_drop, key_dsm = jax.random.split(key)
        k = drop_labels(key_drop, batch["k"], int(num_classes), drop_prob)
        inner = dsm_loss(lambda p, r, x, t: apply(p, r, x, t, k), sde, **dsm_kwargs)
        return inner(params, key_dsm, batch["x"])

    return loss_fn


def _labelled_batch(batch) -> tuple[jax.Array, jax.Array]:
    """(x (n, d), k (n,)) from a batch ``(x, k)`` or ``{"x": x, "k": k}``; checks shapes."""
    if isinstance(batch, dict):
        if set(batch) != {"x", "k"}:
            raise ValueError(f"batch must have the keys 'x' and 'k', got {sorted(batch)}")
        x, k = batch["x"], batch["k"]
    elif isinstance(batch, tuple | list) and len(batch) == 2:
        x, k = batch
    else:
        raise ValueError("batch must be a pair (x, k) or a dict {'x': x, 'k': k}")
    if x.ndim != 2:
        raise ValueError(f"batch x must have shape (n, d), got {x.shape}")
    if k.ndim != 1 or k.shape[0] != x.shape[0]:
        raise ValueError(
            f"batch labels k must have shape ({x.shape[0]},) to match x, got {k.shape}"
        )
    if not jnp.issubdtype(k.dtype, jnp.integer):
        raise ValueError(f"batch labels k must be integers, got dtype {k.dtype}")
    return x, k


def classifier_loss(apply, sde, eps: float = 1e-5):
    """Cross-entropy of a noise-conditional classifier on noised labelled data.

        L(theta) = E_{t ~ U(eps, T)} E_{(x_0, k), z} [ -log p_theta(k | m_t x_0 + s_t z, t) ],

    (m_t, s_t) = sde.marginal(t), notebooks/guidance.md, eq. ``guidance-classifier-loss``
    (Song et al. 2021, appendix I). Its minimiser over all functions is the exact noised
    classifier p_t(k | x), and its value there is E_t H(k | x_t), the conditional entropy of
    the label given the noised point.

    Args:
      apply: model ``apply(params, rng, x, t) -> log p (n, K)``, normalised
        (``networks.sde_classifier_model``).
      sde: an ``SDE``.
      eps: smallest time, in (0, T).

    The batch is ``(x, k)`` (or ``{"x": x, "k": k}``): points (n, d) and integer labels (n,)
    of the same length, else ValueError.
    """
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must be in (0, T = {sde.T}), got {eps}")

    def loss_fn(params, key, batch):
        x, k = _labelled_batch(batch)
        key_time, key_noise, key_model = jax.random.split(key, 3)
        n = x.shape[0]
        t = jax.random.uniform(key_time, (n,), x.dtype, minval=eps, maxval=sde.T)
        scale, std = sde.marginal(t)
        z = jax.random.normal(key_noise, x.shape, x.dtype)
        log_p = apply(params, key_model, scale[:, None] * x + std[:, None] * z, t)
        return -jnp.mean(jnp.take_along_axis(log_p, k[:, None].astype(jnp.int32), axis=1))

    return loss_fn
