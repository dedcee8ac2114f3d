"""One call from an (n, d) array to a trained diffusion model, and back to samples.

``fit`` composes the pieces of the package and nothing else: a forward process from
``diffnb.sde`` or ``diffnb.schedules``, the network of ``diffnb.networks`` wrapped in the
model's parameterisation, the loss of ``diffnb.losses`` and the loop of ``diffnb.training``.
``sample`` runs the model's default sampler from ``diffnb.samplers``, and ``log_likelihood``
the probability-flow likelihood of ``diffnb.likelihood`` through the SDE each model
discretises (``FittedModel.sde``: VE for NCSN, VP for DDPM).

| model | process                     | network in, out        | loss              | sampler   |
|-------|-----------------------------|------------------------|-------------------|-----------|
| vp    | VPSDE()                     | 999 t, score = out/std | DSM, lambda=std^2 | PC        |
| subvp | SubVPSDE()                  | 999 t, score = out/std | DSM, lambda=std^2 | PC        |
| ve    | VESDE(0.01, sigma_max)      | 999 t, score = out/std | DSM, lambda=std^2 | PC        |
| ncsn  | 20 geometric levels of VE   | log sigma, out/sigma   | NCSN, lambda=s^2  | ALD       |
| ddpm  | ddpm_from_vp(VPSDE(), 1000) | 999 (i+1)/N, eps       | L_simple          | ancestral |

PC is the predictor-corrector sampler (reverse-diffusion predictor, Langevin corrector) and
ALD annealed Langevin dynamics.

Coordinates. By default the data are standardised, u = (x - shift) / scale with the data
mean and one scale for all axes (the root mean per-axis variance), so that the processes'
fixed constants (the N(0, I) prior, sigma_min = 0.01) suit data of any size. The model,
``FittedModel.score_fn`` and ``eps_fn`` live in u; ``sample`` and ``log_likelihood`` work
in the data's own coordinates (x = shift + scale u, and log p_x = log p_u - d log scale).
For VE and NCSN, sigma_max is the largest distance between two (standardised) data points,
Song & Ermon's (2020) first rule.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from diffnb import likelihood, losses, networks, samplers, schedules, training
from diffnb._checks import check_positive_int, check_samples
from diffnb.sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = ["MODELS", "FittedModel", "fit", "sample", "log_likelihood", "eps_fn_on"]

MODELS = ("vp", "subvp", "ve", "ncsn", "ddpm")

# Defaults of the processes and samplers (see the table above).
NCSN_LEVELS = 20
DDPM_STEPS = 1000


@dataclasses.dataclass(frozen=True, eq=False)
class FittedModel:
    """A trained model: what ``fit`` returns and ``sample`` / ``log_likelihood`` take.

    Attributes:
      model: one of ``MODELS``.
      params: the trained network parameters (the EMA when ``fit`` kept one).
      network: the network's ``NetworkConfig``.
      process: an ``SDE`` (vp, subvp, ve), ``NCSNSchedule`` (ncsn) or ``DDPMSchedule`` (ddpm).
      shift: (d,) and scale: float, the standardisation u = (x - shift) / scale.
      losses: (num_steps,) the training loss of each step.
      time_scale: the SDE score network's time scale (vp, subvp, ve; see
        ``networks.sde_score_model``).
    """

    model: str
    params: Any
    network: networks.NetworkConfig
    process: Any
    shift: jax.Array
    scale: float
    losses: jax.Array
    time_scale: float = networks.TIME_SCALE

    @functools.cached_property
    def _apply(self):
        """The model function apply(params, rng, u, cond) of the losses."""
        net = networks.score_network(self.network)
        if self.model == "ncsn":
            return networks.ncsn_score_model(net.apply)
        if self.model == "ddpm":
            return networks.ddpm_eps_model(net.apply, self.process.num_steps)
        return networks.sde_score_model(net.apply, self.process, self.time_scale)

    @functools.cached_property
    def score_fn(self):
        """score_fn(u, cond) -> grad_u log q(u), in standardised coordinates u.

        cond is t (vp, subvp, ve), sigma (ncsn) or the step i (ddpm, where the score is
        -eps / sqrt(1 - abar_i)). One object per model, so jitted samplers compile once.
        """
        params, apply = self.params, self._apply
        if self.model != "ddpm":
            return lambda u, cond: apply(params, None, u, cond)
        std = jnp.sqrt(self.process.one_minus_alpha_bars)
        return lambda u, i: -apply(params, None, u, i) / std[i][:, None]

    @property
    def sde(self) -> SDE:
        """The SDE the model discretises: its own for vp, subvp, ve; VE for ncsn; VP for ddpm.

        NCSN's geometric levels sigma_1 > ... > sigma_L are sigma(t) of
        ``VESDE(sigma_L, sigma_1)`` at t_i = (L - i) / (L - 1); DDPM's betas of
        ``ddpm_from_vp(VPSDE(beta_min, beta_max), N)`` are beta_min / N ... beta_max / N,
        which gives back beta_min and beta_max.
        """
        if self.model == "ncsn":
            sigmas = np.asarray(self.process.sigmas, np.float64)
            return VESDE(sigma_min=float(sigmas[-1]), sigma_max=float(sigmas[0]))
        if self.model == "ddpm":
            betas = np.asarray(self.process.betas, np.float64) * self.process.num_steps
            return VPSDE(beta_min=float(betas[0]), beta_max=float(betas[-1]))
        return self.process

    @functools.cached_property
    def sde_score_fn(self):
        """score_fn(u, t) on the continuous time axis of ``self.sde``, in coordinates u.

        vp, subvp, ve: ``score_fn``. ncsn: the network read at sigma(t) of the VE SDE,
        between its training levels too. ddpm: -eps_theta / std(t) with the network read at
        999 t, which is its DDPM conditioning 999 (i + 1) / N at t = (i + 1) / N, and std(t)
        the VP marginal's (equal to sqrt(1 - abar_i) up to the O(1/N) gap of the discretisation).
        """
        params, sde = self.params, self.sde
        if self.model == "ncsn":
            score = self.score_fn
            return lambda u, t: score(u, sde.sigma(t))
        if self.model == "ddpm":
            net = networks.score_network(self.network)
            apply = networks.sde_score_model(net.apply, sde)
            return lambda u, t: -apply(params, None, u, t)
        return self.score_fn

    @functools.cached_property
    def eps_fn(self):
        """eps_fn(u, i) -> predicted noise at DDPM steps i (n,), in standardised coordinates."""
        if self.model != "ddpm":
            raise ValueError(f"eps_fn exists for model='ddpm' only, this is {self.model!r}")
        params, apply = self.params, self._apply
        return lambda u, i: apply(params, None, u, i)


def eps_fn_on(fitted: FittedModel, schedule: schedules.DDPMSchedule):
    """A DDPM model's eps_fn(u, i) on another schedule of N' steps: the network at 999 (i+1)/N'.

    The network was trained on t = (i + 1) / N, so it can be read on any grid of the same VP
    SDE, e.g. ``ddpm_from_vp(fitted.sde, N')`` with fewer steps.
    """
    if not isinstance(fitted, FittedModel) or fitted.model != "ddpm":
        raise ValueError("fitted must be a FittedModel with model='ddpm'")
    if not isinstance(schedule, schedules.DDPMSchedule):
        raise ValueError(f"schedule must be a DDPMSchedule, got {type(schedule).__name__}")
    net = networks.score_network(fitted.network)
    apply, params = networks.ddpm_eps_model(net.apply, schedule.num_steps), fitted.params
    return lambda u, i: apply(params, None, u, i)


def _standardisation(x: jax.Array, standardize: bool) -> tuple[jax.Array, float]:
    if not standardize:
        return jnp.zeros(x.shape[1], x.dtype), 1.0
    shift = jnp.mean(x, axis=0)
    scale = float(jnp.sqrt(jnp.mean(jnp.var(x, axis=0))))
    if not scale > 0:
        raise ValueError("data must not be constant: its variance is 0")
    return shift, scale


def _sigma_max(key: jax.Array, u: jax.Array, max_points: int = 2000) -> float:
    """The largest distance between two points (of a subsample of at most max_points)."""
    if u.shape[0] > max_points:
        u = u[jax.random.choice(key, u.shape[0], (max_points,), replace=False)]
    dist2 = jnp.sum((u[:, None, :] - u[None, :, :]) ** 2, axis=-1)
    return float(jnp.sqrt(jnp.max(dist2)))


def _process(key, model: str, u: jax.Array, sigma_max: float | None = None):
    if model == "vp":
        return VPSDE()
    if model == "subvp":
        return SubVPSDE()
    if model == "ddpm":
        return schedules.ddpm_from_vp(VPSDE(), DDPM_STEPS)
    if sigma_max is None:
        sigma_max = max(_sigma_max(key, u), 0.02)
    ve = VESDE(sigma_min=0.01, sigma_max=sigma_max)
    return ve if model == "ve" else schedules.ncsn_from_ve(ve, NCSN_LEVELS)


def _loss(model: str, apply, process):
    if model == "ncsn":
        return losses.ncsn_loss(apply, process)
    if model == "ddpm":
        return losses.ddpm_loss(apply, process, "simple")
    return losses.dsm_loss(apply, process, "sigma2")


def fit(
    key: jax.Array,
    data,
    model: str = "vp",
    *,
    num_steps: int = 20_000,
    batch_size: int = 256,
    learning_rate: float = 2e-3,
    ema_decay: float | None = 0.999,
    network: networks.NetworkConfig | None = None,
    time_scale: float | None = None,
    sigma_max: float | None = None,
    standardize: bool = True,
    progress: bool | None = None,
) -> FittedModel:
    """Train a diffusion model of kind ``model`` on the points ``data`` (n, d).

    Args:
      key: PRNG key (initialisation, sigma_max's subsample, training).
      data: (n, d) finite points.
      model: ``"vp"``, ``"subvp"``, ``"ve"``, ``"ncsn"`` or ``"ddpm"``.
      num_steps, batch_size: optimiser steps and mini-batch size (capped at n).
      learning_rate: peak rate of ``training.default_optimizer`` (AdamW, warm-up, cosine).
      ema_decay: EMA of the parameters (returned as ``params``), or None for the last iterate.
      network: the network's sizes; default ``NetworkConfig(output_dim=d)``, with
        ``linear_skip=True`` for vp and subvp (see below).
      time_scale: vp, subvp and ve only: radians the time embedding's fastest sinusoid
        turns over [0, T] (``networks.sde_score_model``); default ``networks.TIME_SCALE``.
      sigma_max: ve and ncsn only: the largest noise level (in standardised units), > 0.01;
        default the largest distance between two data points (the module docstring).
      standardize: train on (x - mean) / scale (see the module docstring); False keeps x.
      progress: progress bar, as in ``training.train``.

    Returns:
      a ``FittedModel``.

    The defaults were checked on 10,000 points of ``data.nine_gaussians()`` (one seed, samples
    of n = 5000 from ``sample``): mode TV / MMD^2 / variance ratio were vp 0.027 / -2e-5 / 1.070,
    subvp 0.027 / 4e-4 / 1.089, ve 0.017 / 5e-5 / 1.085, ncsn 0.033 / 5e-4 / 1.054, ddpm
    0.016 / 3e-4 / 1.047. The linear skip of the vp and subvp networks lets the output grow
    with x, as the score of their N(0, I) prior does (notebooks/sde.md); without it subvp's
    modes came out 37% too wide (vp 9.5%), while ve with it gave 1.102. At 5,000 steps the
    modes stay 13-19% too wide (vp, measured without the skip): the score is then still off by
    about 10% near t ~ 0.05-0.1, where the modes' width is decided.
    """
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    x = check_samples(data, "data")
    batch_size = min(check_positive_int(batch_size, "batch_size"), x.shape[0])
    if network is None:
        network = networks.NetworkConfig(
            output_dim=x.shape[1], linear_skip=model in ("vp", "subvp")
        )
    elif network.output_dim != x.shape[1]:
        raise ValueError(f"network.output_dim must be {x.shape[1]}, got {network.output_dim}")
    if time_scale is None:
        time_scale = networks.TIME_SCALE
    elif model in ("ncsn", "ddpm"):
        raise ValueError(f"time_scale applies to vp, subvp and ve only, not {model!r}")
    elif not (np.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a finite positive number, got {time_scale}")
    if sigma_max is not None and (model not in ("ve", "ncsn") or not sigma_max > 0.01):
        raise ValueError(f"sigma_max must be > 0.01 and for ve or ncsn only, got {sigma_max}")
    key_sigma, key_init, key_train = jax.random.split(key, 3)

    shift, scale = _standardisation(x, standardize)
    u = (x - shift[None, :]) / scale
    process = _process(key_sigma, model, u, sigma_max)
    net = networks.score_network(network)
    params = jax.jit(net.init)(key_init, u[:1], jnp.zeros(1, u.dtype))
    skeleton = FittedModel(
        model, params, network, process, shift, scale, jnp.zeros(0), float(time_scale)
    )
    result = training.train(
        key_train,
        _loss(model, skeleton._apply, process),
        params,
        u,
        num_steps=num_steps,
        batch_size=batch_size,
        optimizer=training.default_optimizer(num_steps, learning_rate),
        ema_decay=ema_decay,
        progress=progress,
    )
    params = result.params if ema_decay is None else result.ema_params
    return dataclasses.replace(skeleton, params=params, losses=result.losses)


def _to_data(fitted: FittedModel, u: jax.Array) -> jax.Array:
    """x = shift + scale u for points (n, d) or a trajectory (steps + 1, n, d)."""
    return fitted.scale * u + fitted.shift.reshape((1,) * (u.ndim - 1) + (-1,))


def sample(key: jax.Array, fitted: FittedModel, n: int, **sampler_kwargs) -> samplers.SamplerResult:
    """n samples from the model's default sampler, in the data's coordinates.

    - vp, subvp, ve: ``samplers.predictor_corrector`` (200 steps, snr 0.16, one corrector
      step; nfe 400);
    - ncsn: ``samplers.annealed_langevin`` with 100 steps per level and step_size 5e-5
      (nfe 2000 at the default 20 levels);
    - ddpm: ``samplers.ddpm_ancestral`` with sigma_t^2 = beta_t (nfe 1000).

    ``sampler_kwargs`` are passed on (e.g. ``num_steps``, ``return_trajectory``). The
    trajectory, if asked for, is mapped to data coordinates too.
    """
    if not isinstance(fitted, FittedModel):
        raise ValueError(f"fitted must be a FittedModel, got {type(fitted).__name__}")
    n = check_positive_int(n, "n")
    dim = fitted.network.output_dim
    if fitted.model == "ncsn":
        kwargs = {"steps_per_level": 100, "step_size": 5e-5, **sampler_kwargs}
        out = samplers.annealed_langevin(key, fitted.score_fn, fitted.process, n, dim, **kwargs)
    elif fitted.model == "ddpm":
        out = samplers.ddpm_ancestral(key, fitted.eps_fn, fitted.process, n, dim, **sampler_kwargs)
    else:
        out = samplers.predictor_corrector(
            key, fitted.score_fn, fitted.process, n, dim=dim, **sampler_kwargs
        )
    path = None if out.trajectory is None else _to_data(fitted, out.trajectory)
    return samplers.SamplerResult(_to_data(fitted, out.samples), path, out.nfe)


def log_likelihood(key: jax.Array, fitted: FittedModel, x, **kwargs) -> likelihood.LikelihoodResult:
    """log p(x) in nats per point of x (n, d), in the data's coordinates, for every model.

    The probability-flow likelihood of ``likelihood.log_likelihood`` for ``fitted.sde`` and
    ``fitted.sde_score_fn`` (for ncsn and ddpm the network read on the continuous time axis
    of the SDE they discretise), in standardised coordinates, minus d log(scale), the
    log-Jacobian of u = (x - shift) / scale. ``kwargs`` are passed on (``divergence``,
    ``probe``, ``num_probes``, tolerances, ``eps``).
    """
    if not isinstance(fitted, FittedModel):
        raise ValueError(f"fitted must be a FittedModel, got {type(fitted).__name__}")
    x = check_samples(x, "x", dim=fitted.network.output_dim)
    u = (x - fitted.shift[None, :]) / fitted.scale
    out = likelihood.log_likelihood(key, fitted.sde_score_fn, fitted.sde, u, **kwargs)
    correction = x.shape[1] * float(np.log(fitted.scale))
    return out._replace(log_prob=out.log_prob - correction)
