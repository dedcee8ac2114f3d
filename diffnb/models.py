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
| edm   | EDMProcess() (T = 80)       | EDM preconditioning    | EDM, 1/c_out^2    | Heun      |

PC is the predictor-corrector sampler (reverse-diffusion predictor, Langevin corrector) and
ALD annealed Langevin dynamics. edm is Karras et al.'s (2022) recipe (notebooks/training.md,
``diffnb.preconditioning``): the denoiser D = c_skip u + c_out F(c_in u; c_noise), F the
chapters' MLP with three hidden layers (``EDM_HIDDEN_DIMS``), sigma_d = 1 (the standardised
data's per-axis standard deviation), log sigma_bar ~ N(-1.2, 1.2^2), the weight 1/c_out^2,
and Heun's method on EDM's grid (``diffnb.solvers``) from sigma_bar = 80 to 0.002, 64 steps
(129 evaluations).

Coordinates. By default the data are standardised axis by axis, u_j = (x_j - shift_j) /
scale_j with the data mean and each axis's standard deviation, so that the processes' fixed
constants (the N(0, I) prior, sigma_min = 0.01) suit data of any size and shape: with one
scale for all axes a narrow axis can fall below sigma_min (two moons stretched by [1, 1000]
then come out 2.2 times too wide along the narrow axis). ``standardize="single"`` keeps one
scale, the root mean per-axis variance, and warns when the axes' standard deviations differ
by a factor of 100 or more; False keeps x. The model, ``FittedModel.score_fn`` and
``eps_fn`` live in u = ``to_model(fitted, x)``; ``sample`` and ``log_likelihood`` work in the
data's own coordinates (x = ``to_data(fitted, u)`` = shift + scale u, and log p_x = log p_u -
sum_j log scale_j). For VE and NCSN, sigma_max is the largest distance between two
(standardised) data points, Song & Ermon's (2020) first rule, unless ``fit(sigma_max=...)``
sets it.

Saving: ``fitted.save(path)`` writes one ``.npz`` file (a JSON header with the
configuration, and the arrays: parameters, standardisation, process, losses) and
``load(path)`` reads it back; the loaded model draws bit-identical samples. A ``FittedModel``
also pickles at any time (its compiled closures are rebuilt on first use).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from diffnb import denoisers, likelihood, losses, networks, samplers, schedules, solvers, training
from diffnb import preconditioning as precond
from diffnb._checks import (
    check_data_matrix,
    check_key,
    check_positive,
    check_positive_int,
    check_samples,
)
from diffnb.sde import SDE, VESDE, VPSDE, SubVPSDE

__all__ = [
    "MODELS",
    "SAMPLERS",
    "DEFAULT_BUDGET",
    "DEFAULT_SAMPLERS",
    "FittedModel",
    "Sampler",
    "fit",
    "sample",
    "samplers_for",
    "log_likelihood",
    "eps_fn_on",
    "to_data",
    "to_model",
    "load",
]

MODELS = ("vp", "subvp", "ve", "ncsn", "ddpm", "edm")
# fit's model when none is named: on the one-call test's three mixtures (tests/test_models.py)
# edm's samples are closer in width and NLL than vp's, and within the bars where vp's are not.
DEFAULT_MODEL = "edm"

# Defaults of the processes and samplers (see the table above).
NCSN_LEVELS = 20
DDPM_STEPS = 1000
# edm: sigma_d of the standardised data, and the smallest level of its sampling grid.
EDM_SIGMA_DATA = 1.0
EDM_SIGMA_MIN = 0.002
# edm's default widths: a third hidden layer took the one-call nine Gaussians' variance ratio
# from 1.041 to 1.004 (mean of 3 sampling keys; tests/test_models.py) for ~20% more fit time.
EDM_HIDDEN_DIMS = (256, 256, 256)
# fit's default (num_steps, batch_size) per model: edm sees the same number of points as the
# others in half the steps, which costs less time (notebooks/training.md, "Hard data").
DEFAULT_BUDGET = {model: (20_000, 256) for model in MODELS} | {"edm": (10_000, 512)}
# standardize="single" (or False) warns when the axes' standard deviations differ this much.
ANISOTROPY_WARNING = 100.0

_CACHED = ("_apply", "score_fn", "sde_score_fn", "eps_fn")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class FittedModel:
    """A trained model: what ``fit`` returns and ``sample`` / ``log_likelihood`` take.

    Attributes:
      model: one of ``MODELS``.
      params: the trained network parameters (the EMA when ``fit`` kept one).
      network: the network's ``NetworkConfig``, or the user's own ``hk.Transformed``.
      process: an ``SDE`` (vp, subvp, ve), ``NCSNSchedule`` (ncsn), ``DDPMSchedule`` (ddpm) or
        ``denoisers.EDMProcess`` (edm).
      shift: (d,) and scale: a float or (d,), the standardisation u = (x - shift) / scale.
      losses: (num_steps,) the training loss of each step (of all runs, when resumed).
      time_scale: the SDE score network's time scale (vp, subvp, ve; see
        ``networks.sde_score_model``).
      num_points: the number of training points.

    ``save(path)`` writes it to one file, ``load(path)`` reads it back. The compiled
    functions (``score_fn`` and the others) are built on first use and dropped by pickling.
    """

    model: str
    params: Any
    network: Any
    process: Any
    shift: jax.Array
    scale: Any
    losses: jax.Array
    time_scale: float = networks.TIME_SCALE
    num_points: int = 0

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in _CACHED}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def __repr__(self) -> str:
        steps = int(self.losses.shape[0])
        tail = self.losses[-max(1, steps // 100) :] if steps else None
        loss = "n/a" if tail is None else f"{float(jnp.mean(tail)):.4g}"
        net = "NetworkConfig" if isinstance(self.network, networks.NetworkConfig) else "custom"
        return (
            f"FittedModel(model={self.model!r}, process={type(self.process).__name__}, "
            f"data=({self.num_points}, {self.dim}), network={net} with "
            f"{networks.num_params(self.params):,} parameters, steps={steps:,}, "
            f"final loss={loss})"
        )

    @property
    def dim(self) -> int:
        """The data's dimension d."""
        return int(self.shift.shape[0])

    @property
    def scales(self) -> jax.Array:
        """(d,) the per-axis scale of u = (x - shift) / scale."""
        return jnp.broadcast_to(jnp.asarray(self.scale, jnp.float32), (self.dim,))

    @property
    def net(self) -> hk.Transformed:
        """The network as a transformed pair ``init(key, u, c)``, ``apply(params, rng, u, c)``."""
        if isinstance(self.network, networks.NetworkConfig):
            return networks.score_network(self.network)
        return self.network

    def save(self, path) -> str:
        """Write this model to ``path`` (``.npz`` appended if missing); see ``load``."""
        from diffnb import checkpoint

        return checkpoint.save(path, self)

    @functools.cached_property
    def _apply(self):
        """The model function apply(params, rng, u, cond) of the losses."""
        return _model_fn(self.model, self.network, self.process, self.time_scale)

    @functools.cached_property
    def score_fn(self):
        """score_fn(u, cond) -> grad_u log q(u), in standardised coordinates u.

        cond is t (vp, subvp, ve), sigma (ncsn), the step i (ddpm, where the score is
        -eps / sqrt(1 - abar_i)) or t = sigma_bar (edm, the score (D - u) / t^2 of its
        denoiser). One object per model, so jitted samplers compile once.
        """
        params, apply = self.params, self._apply
        if self.model == "edm":
            return precond.score_fn(apply, params, self.process)
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
            apply = networks.sde_score_model(self.net.apply, sde)
            return lambda u, t: -apply(params, None, u, t)
        return self.score_fn

    @functools.cached_property
    def eps_fn(self):
        """eps_fn(u, i) -> predicted noise at DDPM steps i (n,), in standardised coordinates."""
        if self.model != "ddpm":
            raise ValueError(f"eps_fn exists for model='ddpm' only, this is {self.model!r}")
        params, apply = self.params, self._apply
        return lambda u, i: apply(params, None, u, i)


def _model_fn(model: str, network, process, time_scale: float):
    """The model function of ``FittedModel._apply``, one object per configuration.

    Shared by models of the same configuration (and so is the loss of an SDE model), so that
    a second ``fit`` of the same kind reuses the compiled training steps.
    """
    key = {"ncsn": None, "ddpm": getattr(process, "num_steps", None), "edm": None}.get(
        model, process
    )
    return _model_fn_cached(model, network, key, float(time_scale))


@functools.lru_cache(maxsize=64)
def _model_fn_cached(model: str, network, process, time_scale: float):
    net = (
        networks.score_network(network) if isinstance(network, networks.NetworkConfig) else network
    )
    if model == "ncsn":
        return networks.ncsn_score_model(net.apply)
    if model == "ddpm":
        return networks.ddpm_eps_model(net.apply, process)
    if model == "edm":
        return precond.edm_denoiser(net.apply, EDM_SIGMA_DATA)
    return networks.sde_score_model(net.apply, process, time_scale)


def eps_fn_on(fitted: FittedModel, schedule: schedules.DDPMSchedule):
    """A DDPM model's eps_fn(u, i) on another schedule of N' steps: the network at 999 (i+1)/N'.

    The network was trained on t = (i + 1) / N, so it can be read on any grid of the same VP
    SDE, e.g. ``ddpm_from_vp(fitted.sde, N')`` with fewer steps.
    """
    if not isinstance(fitted, FittedModel) or fitted.model != "ddpm":
        raise ValueError("fitted must be a FittedModel with model='ddpm'")
    if not isinstance(schedule, schedules.DDPMSchedule):
        raise ValueError(f"schedule must be a DDPMSchedule, got {type(schedule).__name__}")
    apply = networks.ddpm_eps_model(fitted.net.apply, schedule.num_steps)
    params = fitted.params
    return lambda u, i: apply(params, None, u, i)


def _check_fitted(fitted) -> FittedModel:
    if not isinstance(fitted, FittedModel):
        raise ValueError(f"fitted must be a FittedModel, got {type(fitted).__name__}")
    return fitted


def _lead(fitted: FittedModel, a: jax.Array) -> jax.Array:
    """(scale, shift), each (d,) shaped to broadcast against a (..., n, d) array a."""
    return fitted.scales.reshape((1,) * (a.ndim - 1) + (-1,)), fitted.shift.reshape(
        (1,) * (a.ndim - 1) + (-1,)
    )


def to_data(fitted: FittedModel, u) -> jax.Array:
    """x = shift + scale u: model coordinates to the data's, for (n, d) or (steps, n, d)."""
    u = jnp.asarray(u)
    scale, shift = _lead(_check_fitted(fitted), u)
    if isinstance(fitted.scale, float):  # one scale: the same arithmetic as a float
        return fitted.scale * u + shift
    return scale * u + shift


def to_model(fitted: FittedModel, x) -> jax.Array:
    """u = (x - shift) / scale: the data's coordinates to the model's, for (n, d) points."""
    x = check_samples(x, "x", dim=_check_fitted(fitted).dim)
    scale, shift = _lead(fitted, x)
    if isinstance(fitted.scale, float):
        return (x - shift) / fitted.scale
    return (x - shift) / scale


def _standardisation(x: jax.Array, standardize) -> tuple[jax.Array, Any]:
    """(shift, scale) of the mode ``standardize``: True / "per_axis", "single" or False."""
    if standardize is True:
        standardize = "per_axis"
    if standardize not in (False, "per_axis", "single"):
        raise ValueError(
            f"standardize must be True, 'per_axis', 'single' or False, got {standardize!r}"
        )
    std = np.asarray(jnp.std(x, axis=0), np.float64)
    if np.any(std == 0):
        raise ValueError(f"data must not be constant: columns {np.flatnonzero(std == 0)} are")
    if standardize != "per_axis" and std.max() >= ANISOTROPY_WARNING * std.min():
        warnings.warn(
            f"the data's axes have standard deviations from {std.min():.3g} to {std.max():.3g}"
            f" (ratio {std.max() / std.min():.3g}); with standardize={standardize!r} the "
            "narrow axes may fall below the process's smallest noise level; "
            "standardize='per_axis' (the default) scales each axis by its own",
            UserWarning,
            stacklevel=3,
        )
    if standardize is False:
        return jnp.zeros(x.shape[1], x.dtype), 1.0
    shift = jnp.mean(x, axis=0)
    if standardize == "single":
        return shift, float(jnp.sqrt(jnp.mean(jnp.var(x, axis=0))))
    return shift, jnp.std(x, axis=0)


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
    if model == "edm":
        return denoisers.EDMProcess()
    if sigma_max is None:
        sigma_max = max(_sigma_max(key, u), 0.02)
    ve = VESDE(sigma_min=0.01, sigma_max=sigma_max)
    return ve if model == "ve" else schedules.ncsn_from_ve(ve, NCSN_LEVELS)


def _loss(model: str, apply, process):
    if model in ("vp", "subvp", "ve"):
        return _sde_loss(apply, process)
    if model == "ncsn":
        return losses.ncsn_loss(apply, process)
    if model == "ddpm":
        return losses.ddpm_loss(apply, process, "simple")
    if model == "edm":
        return _edm_loss(apply)


@functools.lru_cache(maxsize=64)
def _edm_loss(apply):
    return precond.edm_loss(apply, EDM_SIGMA_DATA)


@functools.lru_cache(maxsize=64)
def _sde_loss(apply, process):
    return losses.dsm_loss(apply, process, "sigma2")


def _check_network(network, model: str, dim: int):
    if network is None:
        if model == "edm":
            return networks.NetworkConfig(output_dim=dim, hidden_dims=EDM_HIDDEN_DIMS)
        return networks.NetworkConfig(output_dim=dim, linear_skip=model in ("vp", "subvp"))
    if isinstance(network, networks.NetworkConfig):
        if network.output_dim != dim:
            raise ValueError(f"network.output_dim must be {dim}, got {network.output_dim}")
        return network
    if not (callable(getattr(network, "init", None)) and callable(getattr(network, "apply", None))):
        raise ValueError(
            "network must be a NetworkConfig or a Haiku transformed pair (init, apply) such as "
            f"hk.transform(lambda u, c: ...), got {type(network).__name__}"
        )
    return network


def fit(
    key: jax.Array,
    data,
    model: str | None = None,
    *,
    num_steps: int | None = None,
    batch_size: int | None = None,
    learning_rate: float = 2e-3,
    final_learning_rate: float | None = None,
    optimizer: optax.GradientTransformation | None = None,
    ema_decay: float | None = 0.999,
    ema_warmup: bool = True,
    network: networks.NetworkConfig | hk.Transformed | None = None,
    init_params: Any = None,
    resume: FittedModel | None = None,
    time_scale: float | None = None,
    sigma_max: float | None = None,
    standardize: bool | str = True,
    progress: bool | None = None,
) -> FittedModel:
    """Train a diffusion model of kind ``model`` on the points ``data`` (n, d).

    Args:
      key: PRNG key (initialisation, sigma_max's subsample, training).
      data: (n, d) finite real points, n > d (rows are points).
      model: ``"edm"`` (the default: EDM's preconditioning, noise levels and loss weight;
        notebooks/training.md), ``"vp"``, ``"subvp"``, ``"ve"``, ``"ncsn"`` or ``"ddpm"``.
      num_steps, batch_size: optimiser steps and mini-batch size (capped at n); default
        ``DEFAULT_BUDGET`` for edm, 10,000 steps of 512, and 20,000 steps of 256 for the others.
      learning_rate: peak rate of ``training.default_optimizer`` (AdamW, warm-up, cosine).
      final_learning_rate: the rate the cosine ends at, in (0, learning_rate]; default
        learning_rate / 100 (2e-5 at the default rate).
      optimizer: any optax transformation (e.g. with a schedule of your own); it replaces
        the default one, and learning_rate and final_learning_rate must then be left alone.
      ema_decay: EMA of the parameters (returned as ``params``), or None for the last iterate.
      ema_warmup: the EMA's decay at step k is min(ema_decay, (1 + k) / (10 + k)), so that
        a short run's EMA does not keep the weight of its first, untrained iterates
        (``training.train``); False keeps ema_decay from the first step.
      network: the network's sizes, a ``NetworkConfig``; default ``NetworkConfig(output_dim=d)``
        with ``linear_skip=True`` for vp and subvp (see below), and with three hidden layers,
        ``EDM_HIDDEN_DIMS``, for edm. Or a network of your own: a
        Haiku transformed pair with ``init(key, u, c)`` and ``apply(params, rng, u, c) -> (n,
        d)``, c (n,) the conditioning of ``networks.score_network``; such a model is saved
        without its code, so ``load`` then needs the same ``network``.
      init_params: parameters to start from instead of a fresh initialisation.
      resume: a ``FittedModel`` to train further, on the same process, network, coordinates
        and time scale, from its parameters; the optimiser starts afresh (warm-up and cosine
        over the new ``num_steps``) and the losses are appended. ``model`` may be omitted.
      time_scale: vp, subvp and ve only: radians the time embedding's fastest sinusoid
        turns over [0, T] (``networks.sde_score_model``); default ``networks.TIME_SCALE``.
      sigma_max: ve and ncsn only: the largest noise level (in standardised units), > 0.01;
        default the largest distance between two data points (the module docstring).
      standardize: ``True`` or ``"per_axis"`` (the default: each axis by its own standard
        deviation), ``"single"`` (one scale for all axes) or False (train on x itself); see
        the module docstring.
      progress: progress bar, as in ``training.train``.

    Returns:
      a ``FittedModel``.

    The defaults were checked on 10,000 points of ``data.nine_gaussians()`` (one seed, samples
    of n = 5000 from ``sample``, one scale for all axes and no EMA warm-up): mode TV / MMD^2 /
    variance ratio were vp 0.027 / -2e-5 / 1.070, subvp 0.027 / 4e-4 / 1.089, ve 0.017 / 5e-5 /
    1.085, ncsn 0.033 / 5e-4 / 1.054, ddpm 0.016 / 3e-4 / 1.047
    (tests/test_models.py::test_defaults_reach_the_noise_floor_on_the_nine_gaussians checks
    the current defaults). The linear skip of the vp and subvp networks lets the output grow
    with x, as the score of their N(0, I) prior does (notebooks/sde.md); without it subvp's
    modes came out 37% too wide (vp 9.5%), while ve with it gave 1.102. At 5,000 steps the
    modes stay 13-19% too wide (vp, measured without the skip): the score is then still off by
    about 10% near t ~ 0.05-0.1, where the modes' width is decided. edm with the defaults on
    10,000 points: notebooks/training.md, "Hard data", tabulates what the one-call test in
    tests/test_models.py measures, against vp's, hence ``DEFAULT_MODEL``.
    """
    key = check_key(key)
    if resume is not None:
        _check_fitted(resume)
        if model not in (None, resume.model):
            raise ValueError(f"model must be {resume.model!r} (resume's) or None, got {model!r}")
        clash = {
            "network": network,
            "init_params": init_params,
            "time_scale": time_scale,
            "sigma_max": sigma_max,
        }
        for name, value in clash.items():
            if value is not None:
                raise ValueError(f"{name} must be left out when resuming: it is resume's")
        model = resume.model
    model = DEFAULT_MODEL if model is None else model
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    x = check_data_matrix(data, "data")
    default_steps, default_batch = DEFAULT_BUDGET[model]
    num_steps = default_steps if num_steps is None else num_steps
    batch_size = default_batch if batch_size is None else batch_size
    batch_size = min(check_positive_int(batch_size, "batch_size"), x.shape[0])
    num_steps = check_positive_int(num_steps, "num_steps")
    if optimizer is None:
        learning_rate = check_positive(learning_rate, "learning_rate")
        if final_learning_rate is None:
            final_learning_rate = learning_rate / 100
        final_learning_rate = check_positive(final_learning_rate, "final_learning_rate")
        if final_learning_rate > learning_rate:
            raise ValueError(
                f"final_learning_rate must be at most learning_rate = {learning_rate}, "
                f"got {final_learning_rate}"
            )
        optimizer = training.default_optimizer(
            num_steps, learning_rate, final_learning_rate=final_learning_rate
        )
    elif learning_rate != 2e-3 or final_learning_rate is not None:
        raise ValueError("learning_rate and final_learning_rate must be left out with optimizer")
    if sigma_max is not None and (model not in ("ve", "ncsn") or not sigma_max > 0.01):
        raise ValueError(f"sigma_max must be > 0.01 and for ve or ncsn only, got {sigma_max}")
    key_sigma, key_init, key_train = jax.random.split(key, 3)

    if resume is not None:
        if x.shape[1] != resume.dim:
            raise ValueError(f"data must have {resume.dim} columns (resume's), got {x.shape}")
        skeleton = dataclasses.replace(resume, num_points=x.shape[0])
        params, previous = resume.params, resume.losses
    else:
        network = _check_network(network, model, x.shape[1])
        if time_scale is None:
            time_scale = networks.TIME_SCALE
        elif model in ("ncsn", "ddpm", "edm"):
            raise ValueError(f"time_scale applies to vp, subvp and ve only, not {model!r}")
        elif not (np.isfinite(time_scale) and time_scale > 0):
            raise ValueError(f"time_scale must be a finite positive number, got {time_scale}")
        shift, scale = _standardisation(x, standardize)
        u = (x - shift[None, :]) / (scale if isinstance(scale, float) else scale[None, :])
        process = _process(key_sigma, model, u, sigma_max)
        skeleton = FittedModel(
            model, None, network, process, shift, scale, jnp.zeros(0), float(time_scale),
            x.shape[0],
        )  # fmt: skip
        if init_params is None:
            params = jax.jit(skeleton.net.init)(key_init, u[:1], jnp.zeros(1, u.dtype))
        else:
            params = jax.tree_util.tree_map(jnp.asarray, init_params)
        previous = jnp.zeros(0)
    u = to_model(skeleton, x)
    result = training.train(
        key_train,
        _loss(model, skeleton._apply, skeleton.process),
        params,
        u,
        num_steps=num_steps,
        batch_size=batch_size,
        optimizer=optimizer,
        ema_decay=ema_decay,
        ema_warmup=ema_warmup,
        progress=progress,
    )
    params = result.params if ema_decay is None else result.ema_params
    fitted = dataclasses.replace(
        skeleton, params=params, losses=jnp.concatenate([previous, result.losses])
    )
    return fitted


# ---------------------------------------------------------------------------------------------
# Samplers, by name.


class Sampler(NamedTuple):
    """A named sampler of ``sample``.

    Attributes:
      run: run(key, fitted, n, **options) -> SamplerResult in model coordinates u.
      models: the models it applies to.
      options: its option names and default values (None: the default depends on the model,
        as said in ``doc``).
      doc: one line for the table of ``sample``.
    """

    run: Callable[..., samplers.SamplerResult]
    models: tuple[str, ...]
    options: dict[str, Any]
    doc: str


def _run_pc(key, fitted, n, **options):
    return samplers.predictor_corrector(
        key, fitted.sde_score_fn, fitted.sde, n, dim=fitted.dim, **options
    )


def _run_em(key, fitted, n, **options):
    return samplers.euler_maruyama(
        key, fitted.sde_score_fn, fitted.sde, n, dim=fitted.dim, **options
    )


def _run_ode(key, fitted, n, **options):
    return samplers.probability_flow_ode(
        key, fitted.sde_score_fn, fitted.sde, n, dim=fitted.dim, **options
    )


def _run_ald(key, fitted, n, **options):
    return samplers.annealed_langevin(
        key, fitted.score_fn, fitted.process, n, fitted.dim, **options
    )


def _ddpm_schedule(fitted, num_steps):
    if num_steps is None or num_steps == fitted.process.num_steps:
        return fitted.eps_fn, fitted.process
    schedule = schedules.ddpm_from_vp(fitted.sde, check_positive_int(num_steps, "num_steps"))
    return eps_fn_on(fitted, schedule), schedule


def _run_ancestral(key, fitted, n, num_steps=None, **options):
    eps_fn, schedule = _ddpm_schedule(fitted, num_steps)
    return samplers.ddpm_ancestral(key, eps_fn, schedule, n, fitted.dim, **options)


def _run_ddim(key, fitted, n, num_steps=100, **options):
    return samplers.ddim(key, fitted.eps_fn, fitted.process, n, num_steps, fitted.dim, **options)


def _solver_runner(solver):
    def run(key, fitted, n, num_steps=64, eps=None, **options):
        if eps is None:
            eps = EDM_SIGMA_MIN if fitted.model == "edm" else 1e-3
        grid = solvers.time_grid(fitted.sde, num_steps, "edm", t_min=eps)
        return solver(key, fitted.sde_score_fn, fitted.sde, grid, n=n, dim=fitted.dim, **options)

    return run


_SDE_MODELS = ("vp", "subvp", "ve", "ncsn", "ddpm")  # pc and em: not on edm's T = 80 prior
_TRAJ = {"return_trajectory": False}
SAMPLERS: dict[str, Sampler] = {
    "pc": Sampler(
        _run_pc, _SDE_MODELS,
        {"num_steps": 200, "snr": 0.16, "corrector_steps": 1, "predictor": "reverse_diffusion",
         "eps": 1e-3, **_TRAJ},
        "predictor-corrector on fitted.sde (samplers.predictor_corrector); nfe 400",
    ),
    "em": Sampler(
        _run_em, _SDE_MODELS, {"num_steps": 100, "eps": 1e-3, **_TRAJ},
        "Euler-Maruyama on the reverse SDE of fitted.sde (samplers.euler_maruyama)",
    ),
    "ode": Sampler(
        _run_ode, MODELS, {"rtol": 1e-5, "atol": 1e-5, "eps": 1e-3, **_TRAJ},
        "the probability-flow ODE of fitted.sde by RK45 (samplers.probability_flow_ode)",
    ),
    "ald": Sampler(
        _run_ald, ("ncsn",),
        {"steps_per_level": 100, "step_size": 5e-5, "step_exponent": 2.0, "denoise": False,
         **_TRAJ},
        "annealed Langevin dynamics on the NCSN levels (samplers.annealed_langevin); nfe 2000",
    ),
    "ancestral": Sampler(
        _run_ancestral, ("ddpm",), {"num_steps": None, "variance": "beta", **_TRAJ},
        "DDPM ancestral sampling (samplers.ddpm_ancestral) on the training schedule, or on "
        "ddpm_from_vp(fitted.sde, num_steps); nfe num_steps (1000)",
    ),
    "ddim": Sampler(
        _run_ddim, ("ddpm",), {"num_steps": 100, **_TRAJ},
        "deterministic DDIM on num_steps of the training steps (samplers.ddim)",
    ),
    "heun": Sampler(
        _solver_runner(solvers.heun), MODELS,
        {"num_steps": 64, "eps": None, "denoise": True, **_TRAJ},
        "EDM's Heun solver on EDM's grid of fitted.sde down to eps (solvers.heun); "
        "nfe 2 num_steps + 1 (129)",
    ),
    "dpm_solver_pp": Sampler(
        _solver_runner(solvers.dpm_solver_pp), MODELS,
        {"num_steps": 64, "eps": None, "order": 2, "denoise": True, **_TRAJ},
        "DPM-Solver++(2M) on EDM's grid of fitted.sde (solvers.dpm_solver_pp); nfe num_steps + 1",
    ),
}  # fmt: skip
DEFAULT_SAMPLERS = {
    "vp": "pc", "subvp": "pc", "ve": "pc", "ncsn": "ald", "ddpm": "ancestral", "edm": "heun",
}  # fmt: skip


def samplers_for(model: str) -> tuple[str, ...]:
    """The names of the samplers of ``SAMPLERS`` that apply to ``model``, its default first."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    names = [name for name, s in SAMPLERS.items() if model in s.models]
    names.remove(DEFAULT_SAMPLERS[model])
    return (DEFAULT_SAMPLERS[model], *names)


def sample(
    key: jax.Array, fitted: FittedModel, n: int, sampler: str | None = None, **options
) -> samplers.SamplerResult:
    """n samples from the sampler named ``sampler`` (default: the model's), in data coordinates.

    Samplers (``SAMPLERS``; ``samplers_for(model)`` lists a model's, its default first):

    - ``"pc"``, every model but edm (default for vp, subvp, ve): predictor-corrector on
      ``fitted.sde`` (200 steps, snr 0.16, one corrector step; nfe 400);
    - ``"em"``, every model but edm: Euler-Maruyama on the reverse SDE (100 steps);
    - ``"ode"``, every model: the probability-flow ODE by RK45 (tolerances 1e-5);
    - ``"heun"``, every model (default for edm): EDM's Heun solver on EDM's grid of
      ``fitted.sde``, ``num_steps`` 64 down to ``eps`` (0.002 for edm, 1e-3 otherwise; nfe
      129); ``"dpm_solver_pp"``, every model: DPM-Solver++(2M) on the same grid (nfe 65);
    - ``"ald"``, ncsn (its default): annealed Langevin dynamics, 100 steps per level, step
      size 5e-5 (nfe 2000 at the default 20 levels);
    - ``"ancestral"``, ddpm (its default): ancestral sampling with sigma_t^2 = beta_t on the
      training schedule (nfe 1000), or with ``num_steps`` on ``ddpm_from_vp(fitted.sde, N')``;
    - ``"ddim"``, ddpm: deterministic DDIM on ``num_steps`` (100) of the training steps.

    For ncsn and ddpm, pc, em and ode run on the SDE they discretise, with
    ``fitted.sde_score_fn``. ``options`` are the chosen sampler's (``SAMPLERS[name].options``
    lists them with their defaults) and mean the same everywhere: ``num_steps`` the number of
    steps, ``eps`` the SDE's end time, ``rtol``/``atol`` the ODE's tolerances,
    ``return_trajectory`` the path (mapped to data coordinates too). An option the sampler
    does not take is a ValueError that lists the ones it does. New samplers are added as
    entries of ``SAMPLERS``.
    """
    key = check_key(key)
    _check_fitted(fitted)
    n = check_positive_int(n, "n")
    name = DEFAULT_SAMPLERS[fitted.model] if sampler is None else sampler
    if name not in SAMPLERS or fitted.model not in SAMPLERS[name].models:
        raise ValueError(
            f"sampler must be one of {samplers_for(fitted.model)} for model={fitted.model!r}, "
            f"got {sampler!r}"
        )
    spec = SAMPLERS[name]
    for option in options:
        if option not in spec.options:
            why = " (the fitted model's)" if option in ("dim", "n", "score_fn", "sde") else ""
            raise ValueError(
                f"{option} is not an option of sampler {name!r}{why}; its options are "
                f"{tuple(spec.options)}"
            )
    kwargs = {k: v for k, v in {**spec.options, **options}.items() if v is not None}
    out = spec.run(key, fitted, n, **kwargs)
    path = None if out.trajectory is None else to_data(fitted, out.trajectory)
    return samplers.SamplerResult(to_data(fitted, out.samples), path, out.nfe)


def log_likelihood(
    key: jax.Array,
    fitted: FittedModel,
    x,
    *,
    batch_size: int = likelihood.BATCH_SIZE,
    max_nfe: int = likelihood.MAX_NFE,
    **kwargs,
) -> likelihood.LikelihoodResult:
    """log p(x) in nats per point of x (n, d), in the data's coordinates, for every model.

    The probability-flow likelihood of ``likelihood.log_likelihood`` for ``fitted.sde`` and
    ``fitted.sde_score_fn`` (for ncsn and ddpm the network read on the continuous time axis
    of the SDE they discretise), in standardised coordinates, minus sum_j log scale_j, the
    log-Jacobian of u = (x - shift) / scale. It uses the per-point solver: each point takes
    its own steps, in batches of ``batch_size`` (default 1024) points, and a point that needs
    more than ``max_nfe`` (default 10,000) evaluations stops there: then
    ``likelihood.SolverBudgetError`` names those points (``.indices``) and carries every
    other point's value (``.result``, NaN at the named points), the value it has without
    them. ``kwargs`` are passed on (``divergence``, ``probe``, ``num_probes``, tolerances,
    ``eps``; ``solver="scipy"`` for one RK45 system of all points).
    """
    key = check_key(key)
    x = check_samples(x, "x", dim=_check_fitted(fitted).dim)
    u = to_model(fitted, x)
    correction = float(np.sum(np.log(np.asarray(fitted.scales, np.float64))))
    if isinstance(fitted.scale, float):
        correction = x.shape[1] * float(np.log(fitted.scale))
    kwargs = {"solver": "per_point", "batch_size": batch_size, "max_nfe": max_nfe, **kwargs}
    try:
        out = likelihood.log_likelihood(key, fitted.sde_score_fn, fitted.sde, u, **kwargs)
    except likelihood.SolverBudgetError as error:
        part = error.result
        error.result = part._replace(log_prob=part.log_prob - correction)
        raise
    return out._replace(log_prob=out.log_prob - correction)


def load(path, network: hk.Transformed | None = None) -> FittedModel:
    """Read a ``FittedModel`` written by ``FittedModel.save``; ``network`` for a custom one."""
    from diffnb import checkpoint

    return checkpoint.load(path, network)
