"""Labels and conditioning for Gaussian mixtures: exact noised classifiers, class-conditional
and conditional-law scores, and guided scores built from score functions of (x, t).

For data x_0 ~ sum_k w_k N(mu_k, Sigma_k) with label k (the component that drew x_0), noised
as x_t = m(t) x_0 + s(t) z, each class stays one Gaussian,

    p_t(x | k) = N(x; m mu_k, m^2 Sigma_k + s^2 I),

and Bayes' rule gives the noised classifier, the responsibility of component k,

    omega_k(x, t) = p_t(k | x) = w_k p_t(x | k) / p_t(x),

so that grad log p_t(x | k) = grad log p_t(x) + grad log p_t(k | x) (Bayes for scores).
Observing coordinates x_A = a of x_0 leaves a mixture on the others, x_B:
conditional Gaussians N(mu_kB + S_kBA S_kAA^-1 (a - mu_kA), S_kBB - S_kBA S_kAA^-1 S_kAB) with
weights proportional to w_k N(a; mu_kA, S_kAA); its noised score is ``sde.exact_score`` of
that mixture. Derived in notebooks/guidance.md. All noised densities reuse
``diffnb.data``'s noised log-density and score (eq. ``data-noised``).

Guided scores (``ClassifierGuidance``, ``ClassifierFreeGuidance``) are frozen dataclasses
registered as pytrees: the score functions are static (the tree's auxiliary data, compared
by identity), the label and the weight are array leaves. A sweep over labels and weights
therefore compiles once when the guided score is passed as an argument of one outer
``jax.jit`` around a sampler (see ``ClassifierGuidance``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from diffnb import data
from diffnb import sde as sde_lib
from diffnb._checks import check_positive_int

__all__ = [
    "sample_with_labels",
    "classifier_log_prob",
    "classifier_grad",
    "class_conditional_score",
    "conditional_mixture",
    "conditional_score",
    "ClassifierGuidance",
    "ClassifierFreeGuidance",
    "classifier_guidance",
    "classifier_free_guidance",
    "learned_classifier_grad",
    "Imputation",
    "imputation",
    "ReconstructionGuidance",
    "reconstruction_guidance",
]

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]
LabelledFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def sample_with_labels(
    key: jax.Array, mixture: data.GaussianMixture, n: int
) -> tuple[jax.Array, jax.Array]:
    """Draw ``n`` points (n, d) and their component labels k (n,) int32 from the mixture.

    The same draws as ``data.sample(key, mixture, n)`` (same key split), with the labels.
    """
    n = check_positive_int(n, "n")
    key_component, key_noise = jax.random.split(key)
    k = jax.random.choice(key_component, mixture.num_components, (n,), p=mixture.weights)
    chol = jnp.linalg.cholesky(mixture.covs)
    z = jax.random.normal(key_noise, (n, mixture.dim))
    return mixture.means[k] + jnp.einsum("nij,nj->ni", chol[k], z), k.astype(jnp.int32)


def _components(mixture: data.GaussianMixture) -> data.GaussianMixture:
    """The K one-component mixtures stacked on a leading axis (for ``jax.vmap``)."""
    k = mixture.num_components
    return data.GaussianMixture(
        jnp.ones((k, 1), mixture.weights.dtype), mixture.means[:, None], mixture.covs[:, None]
    )


def _component_log_probs(mixture, x, scale, std) -> jax.Array:
    """log p_t(x | k) for every point and component, shape (n, K)."""
    per_k = jax.vmap(lambda c: data.log_prob(c, x, scale, std))(_components(mixture))
    return per_k.T


def _check_labels(k, n: int, num_classes: int) -> jax.Array:
    """``k`` as an (n,) int32 array; out-of-range labels raise outside ``jit``."""
    k = jnp.asarray(k)
    if not jnp.issubdtype(k.dtype, jnp.integer):
        raise ValueError(f"k must be an integer label, got dtype {k.dtype}")
    if k.shape not in ((), (n,)):
        raise ValueError(f"k must be a scalar or have shape ({n},), got {k.shape}")
    if not isinstance(k, jax.core.Tracer):
        bad = np.asarray(k)
        if np.any((bad < 0) | (bad >= num_classes)):
            raise ValueError(f"k must lie in [0, {num_classes}), got {bad.min()}..{bad.max()}")
    return jnp.broadcast_to(k, (n,)).astype(jnp.int32)


def _noise(sde: sde_lib.SDE, x, t):
    x = sde_lib._check_points(x)
    return x, *sde.marginal(sde_lib._per_point(t, x))


def classifier_log_prob(sde: sde_lib.SDE, mixture: data.GaussianMixture):
    """fn(x, t) = log p_t(k | x) = log omega_k(x, t) for every k, shape (n, K).

    log omega_k = log w_k + log p_t(x | k) - log p_t(x), with p_t(x | k) the k-th component
    noised by (m, s) = sde.marginal(t). Jit-compatible.
    """

    def fn(x: jax.Array, t: jax.Array) -> jax.Array:
        x, scale, std = _noise(sde, x, t)
        log_joint = jnp.log(mixture.weights)[None] + _component_log_probs(mixture, x, scale, std)
        return log_joint - jax.scipy.special.logsumexp(log_joint, axis=1, keepdims=True)

    return fn


def class_conditional_score(sde: sde_lib.SDE, mixture: data.GaussianMixture) -> LabelledFn:
    """fn(x, t, k) = grad_x log p_t(x | k), the score of the k-th component noised, (n, d).

    ``k`` is a scalar label or one per point (n,), traced or concrete. Jit-compatible.
    """

    def fn(x: jax.Array, t: jax.Array, k) -> jax.Array:
        x, scale, std = _noise(sde, x, t)
        k = _check_labels(k, x.shape[0], mixture.num_components)
        per_k = jax.vmap(lambda c: data.score(c, x, scale, std))(_components(mixture))  # (K,n,d)
        return jnp.take_along_axis(per_k, k[None, :, None], axis=0)[0]

    return fn


def classifier_grad(sde: sde_lib.SDE, mixture: data.GaussianMixture) -> LabelledFn:
    """fn(x, t, k) = grad_x log p_t(k | x) = grad log p_t(x | k) - grad log p_t(x), (n, d).

    Bayes for scores, with both terms exact (``class_conditional_score`` and
    ``sde.exact_score``). Jit-compatible.
    """
    conditional = class_conditional_score(sde, mixture)
    marginal = sde_lib.exact_score(sde, mixture)

    def fn(x: jax.Array, t: jax.Array, k) -> jax.Array:
        return conditional(x, t, k) - marginal(x, t)

    return fn


def _check_observed(observed, dim: int) -> np.ndarray:
    idx = np.asarray(observed)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"observed must be a non-empty 1-D list of integer indices, got {observed}"
        )
    if np.any((idx < 0) | (idx >= dim)):
        raise ValueError(f"observed indices must lie in [0, {dim}), got {idx.tolist()}")
    if len(set(idx.tolist())) != idx.size:
        raise ValueError(f"observed indices must be distinct, got {idx.tolist()}")
    if idx.size == dim:
        raise ValueError("observed must leave at least one coordinate free")
    return idx


def conditional_mixture(
    mixture: data.GaussianMixture, observed, value
) -> tuple[data.GaussianMixture, np.ndarray]:
    """The law of x_B given x_A = a under the mixture, and the free indices B.

    ``observed`` lists the indices A (distinct, in range, not all of them); ``value`` is a,
    shape (|A|,). Component k becomes N(mu_kB + S_BA S_AA^-1 (a - mu_kA),
    S_BB - S_BA S_AA^-1 S_AB) with weight proportional to w_k N(a; mu_kA, S_AA).
    """
    a_idx = _check_observed(observed, mixture.dim)
    b_idx = np.setdiff1d(np.arange(mixture.dim), a_idx)
    a = jnp.asarray(value, mixture.means.dtype)
    if a.shape != (a_idx.size,):
        raise ValueError(f"value must have shape ({a_idx.size},), got {a.shape}")
    if not isinstance(a, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(a))):
        raise ValueError("value must be finite")
    mu, cov = mixture.means, mixture.covs
    mu_a, mu_b = mu[:, a_idx], mu[:, b_idx]
    s_aa = cov[:, a_idx][:, :, a_idx]
    s_ba = cov[:, b_idx][:, :, a_idx]
    s_bb = cov[:, b_idx][:, :, b_idx]
    gain = jnp.swapaxes(jnp.linalg.solve(s_aa, jnp.swapaxes(s_ba, 1, 2)), 1, 2)  # S_BA S_AA^-1
    means = mu_b + jnp.einsum("kba,ka->kb", gain, a[None] - mu_a)
    covs = s_bb - jnp.einsum("kba,kca->kbc", gain, s_ba)
    marginal_a = data.GaussianMixture(mixture.weights, mu_a, s_aa)
    log_w = jnp.log(mixture.weights) + _component_log_probs(marginal_a, a[None], 1.0, 0.0)[0]
    weights = jnp.exp(log_w - jax.scipy.special.logsumexp(log_w))
    return data.GaussianMixture(weights, means, 0.5 * (covs + jnp.swapaxes(covs, 1, 2))), b_idx


def conditional_score(sde: sde_lib.SDE, mixture: data.GaussianMixture, observed, value):
    """score_fn(x_B, t) = grad log p_t(x_B | x_A = a) of the conditional law noised, (n, |B|).

    The conditional law (``conditional_mixture``) pushed through ``sde`` like any data.
    """
    return sde_lib.exact_score(sde, conditional_mixture(mixture, observed, value)[0])


# ---------------------------------------------------------------------------------------------
# Guided scores: pytrees whose functions are static and whose label and weight are leaves.


def _check_scale(value, name: str) -> jax.Array:
    value = jnp.asarray(value, jnp.float32)
    if value.shape != ():
        raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
    if not isinstance(value, jax.core.Tracer) and not bool(jnp.isfinite(value)):
        raise ValueError(f"{name} must be finite, got {float(value)}")
    return value


def _check_label(label, num_classes: int | None) -> jax.Array:
    label = jnp.asarray(label)
    if label.shape != () or not jnp.issubdtype(label.dtype, jnp.integer):
        raise ValueError(f"label must be a scalar integer, got {label.dtype} {label.shape}")
    if num_classes is not None and not isinstance(label, jax.core.Tracer):
        if not 0 <= int(label) < num_classes:
            raise ValueError(f"label must lie in [0, {num_classes}), got {int(label)}")
    return label.astype(jnp.int32)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierGuidance:
    """s(x, t) + gamma grad_x log p_t(label | x): classifier guidance as a score of (x, t).

    ``score_fn(x, t)`` and ``classifier_grad_fn(x, t, k)`` are static; ``label`` (int32) and
    ``scale`` (gamma, float32) are pytree leaves. Hash and equality are by identity, so the
    object can be a static argument of the jitted samplers; to sweep labels and scales with one
    compile, pass it through an outer ``jax.jit``::

        run = jax.jit(lambda key, g: samplers.euler_maruyama(key, g, sde, n).samples)
        run(key, classifier_guidance(s, grad, k, gamma))   # same compile for every k, gamma

    With exact functions and gamma = 1 this is the class-conditional score (Bayes for scores).
    """

    score_fn: ScoreFn
    classifier_grad_fn: LabelledFn
    label: jax.Array
    scale: jax.Array

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        return self.score_fn(x, t) + self.scale * self.classifier_grad_fn(x, t, self.label)

    def tree_flatten(self):
        return (self.label, self.scale), (self.score_fn, self.classifier_grad_fn)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*aux, *children)


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierFreeGuidance:
    """(1 + w) s(x, t, label) - w s(x, t, null): classifier-free guidance as a score of (x, t).

    ``conditional_fn(x, t, k)`` is the class-conditional score; ``unconditional_fn(x, t)`` the
    score with the null label. ``label`` (int32) and ``weight`` (w, float32) are pytree leaves,
    as in ``ClassifierGuidance``. With exact scores, (1 + w) grad log p_t(x | k) -
    w grad log p_t(x) = grad log p_t(x) + (1 + w) grad log p_t(k | x): classifier guidance
    with gamma = 1 + w.
    """

    conditional_fn: LabelledFn
    unconditional_fn: ScoreFn
    label: jax.Array
    weight: jax.Array

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        s_cond = self.conditional_fn(x, t, self.label)
        return (1.0 + self.weight) * s_cond - self.weight * self.unconditional_fn(x, t)

    def tree_flatten(self):
        return (self.label, self.weight), (self.conditional_fn, self.unconditional_fn)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*aux, *children)


def classifier_guidance(
    score_fn: ScoreFn, classifier_grad_fn: LabelledFn, label, scale, num_classes=None
) -> ClassifierGuidance:
    """Build ``ClassifierGuidance``, checking ``label`` (in [0, num_classes) when given) and
    that ``scale`` is a finite scalar; raises ValueError naming the argument."""
    return ClassifierGuidance(
        score_fn, classifier_grad_fn, _check_label(label, num_classes), _check_scale(scale, "scale")
    )


def classifier_free_guidance(
    conditional_fn: LabelledFn, unconditional_fn: ScoreFn, label, weight, num_classes=None
) -> ClassifierFreeGuidance:
    """Build ``ClassifierFreeGuidance``, checking ``label`` (in [0, num_classes) when given)
    and that ``weight`` is a finite scalar; raises ValueError naming the argument."""
    return ClassifierFreeGuidance(
        conditional_fn,
        unconditional_fn,
        _check_label(label, num_classes),
        _check_scale(weight, "weight"),
    )


def learned_classifier_grad(apply, params, num_classes: int) -> LabelledFn:
    """fn(x, t, k) = grad_x log p_theta(k | x, t) of a learned classifier, (n, d).

    ``apply(params, rng, x, t) -> (n, K)`` normalised log-probabilities
    (``networks.sde_classifier_model``). The classifier acts on each point alone, so the
    gradient of the sum over points of log p_theta(k_i | x_i) is the per-point gradient. The
    signature is ``classifier_grad``'s, so it plugs into ``classifier_guidance``
    (notebooks/guidance.md, eq. ``guidance-bayes``). ``k`` is a scalar label or one per point.
    """
    num_classes = check_positive_int(num_classes, "num_classes")

    def fn(x: jax.Array, t: jax.Array, k) -> jax.Array:
        x = sde_lib._check_points(x)
        t = sde_lib._per_point(t, x)
        k = _check_labels(k, x.shape[0], num_classes)

        def total(x_):
            log_p = apply(params, None, x_, t)
            return jnp.sum(jnp.take_along_axis(log_p, k[:, None], axis=1))

        return jax.grad(total)(x)

    return fn


# ---------------------------------------------------------------------------------------------
# Imputation by replacement: a hook for the scan-based samplers.


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class Imputation:
    """The replacement method (Song et al. 2021) as a sampler hook: ``hook(key, x, t)``.

    After each reverse step, reaching time t, the observed coordinates A are reset to a noised
    copy of the observation, x_A <- m(t) a + s(t) z with z ~ N(0, I) and (m, s) =
    sde.marginal(t); the free coordinates keep the sampler's values. Pass it as ``hook`` to
    ``samplers.euler_maruyama`` or ``samplers.predictor_corrector`` (the adaptive
    probability-flow ODE, a scipy solve, takes no per-step hook). ``sde`` and ``observed``
    are static; ``value`` (a) is a pytree leaf, so a sweep over observations compiles once
    under an outer ``jax.jit``, as for ``ClassifierGuidance``. At the last step t = eps the
    observed coordinates are a noised copy at eps, not a itself.
    """

    sde: sde_lib.SDE
    observed: tuple[int, ...]
    value: jax.Array

    def __call__(self, key: jax.Array, x: jax.Array, t: jax.Array) -> jax.Array:
        idx = _check_observed(list(self.observed), x.shape[1])
        m, s = self.sde.marginal(t)
        z = jax.random.normal(key, (x.shape[0], idx.size), x.dtype)
        noised = m[:, None] * self.value[None] + s[:, None] * z
        return x.at[:, idx].set(noised)

    def tree_flatten(self):
        return (self.value,), (self.sde, self.observed)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*aux, *children)


def _check_observation(sde, observed, value, dim) -> tuple[tuple[int, ...], jax.Array]:
    """(observed indices, a) for an observation x_A = a of points of ``dim`` coordinates:
    ``observed`` distinct indices in [0, dim) leaving one free, ``value`` finite of shape
    (|A|,); raises ValueError naming the argument (also for an ``sde`` that is not an SDE)."""
    if not isinstance(sde, sde_lib.SDE):
        raise ValueError(f"sde must be a diffnb.sde.SDE, got {type(sde).__name__}")
    idx = _check_observed(observed, check_positive_int(dim, "dim"))
    a = jnp.asarray(value, jnp.float32)
    if a.shape != (idx.size,):
        raise ValueError(f"value must have shape ({idx.size},), got {a.shape}")
    if not isinstance(a, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(a))):
        raise ValueError("value must be finite")
    return tuple(int(i) for i in idx), a


def imputation(sde: sde_lib.SDE, observed, value, dim: int) -> Imputation:
    """Build ``Imputation`` for points of ``dim`` coordinates, checking that ``observed`` are
    distinct indices in [0, dim) leaving one free and that ``value`` is finite, shape (|A|,);
    raises ValueError naming the argument."""
    return Imputation(sde, *_check_observation(sde, observed, value, dim))


# ---------------------------------------------------------------------------------------------
# Reconstruction guidance (diffusion posterior sampling) through Tweedie's denoiser.


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True, eq=False)
class ReconstructionGuidance:
    """s(x, t) + grad_x log N(a; x0_hat(x, t)_A, r_t^2 I): reconstruction guidance (DPS).

    Tweedie's denoiser x0_hat = (x + s_t^2 s(x, t)) / m_t (with (m_t, s_t) =
    sde.marginal(t)) stands in for the unknown x_0 in the likelihood of the observation
    x_A = a (Chung et al. 2023), with the variance rule

        r_t^2 = tau^2 sigma_bar_t^2 / (tau^2 + sigma_bar_t^2),   sigma_bar_t = s_t / m_t,

    the posterior variance of x_0 given x_t when the data are N(mu, tau^2 I). For such data
    x0_hat is the exact posterior mean and p(x_A = a | x_t) = N(a; x0_hat_A, r_t^2 I) exactly,
    so the guided score is the exact noised score of the conditional law; for other data it
    is an approximation (notebooks/guidance.md, eq. ``guidance-dps``). ``score_fn``, ``sde``
    and ``observed`` are static; ``value`` (a) and ``tau`` are leaves, so a sweep over them
    compiles once under an outer ``jax.jit``.
    """

    score_fn: ScoreFn
    sde: sde_lib.SDE
    observed: tuple[int, ...]
    value: jax.Array
    tau: jax.Array

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        x = sde_lib._check_points(x)
        t = sde_lib._per_point(t, x)
        idx = _check_observed(list(self.observed), x.shape[1])
        m, s = self.sde.marginal(t)
        sigma_bar2 = jnp.square(s / m)
        r2 = self.tau**2 * sigma_bar2 / (self.tau**2 + sigma_bar2)

        def log_likelihood(x_):
            score = self.score_fn(x_, t)
            x0_hat = (x_ + jnp.square(s)[:, None] * score) / m[:, None]
            residual = self.value[None] - x0_hat[:, idx]
            return -0.5 * jnp.sum(jnp.square(residual) / r2[:, None]), score

        grad, score = jax.grad(log_likelihood, has_aux=True)(x)
        return score + grad

    def tree_flatten(self):
        return (self.value, self.tau), (self.score_fn, self.sde, self.observed)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*aux, *children)


def reconstruction_guidance(
    score_fn: ScoreFn, sde: sde_lib.SDE, observed, value, tau, dim: int
) -> ReconstructionGuidance:
    """Build ``ReconstructionGuidance`` for points of ``dim`` coordinates, checking
    ``observed`` (distinct indices in [0, dim) leaving one free), ``value`` (finite, shape
    (|A|,)) and ``tau`` (a finite positive scalar); raises ValueError naming the argument."""
    observed, a = _check_observation(sde, observed, value, dim)
    tau = _check_scale(tau, "tau")
    if not isinstance(tau, jax.core.Tracer) and not float(tau) > 0:
        raise ValueError(f"tau must be positive, got {float(tau)}")
    return ReconstructionGuidance(score_fn, sde, observed, a, tau)
