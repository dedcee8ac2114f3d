"""Exact log-likelihoods of a score model through the probability-flow ODE.

Along a solution x(t) of the probability-flow ODE dx/dt = f_tilde(x, t) = f - 1/2 g^2 s, the
instantaneous change of variables (Chen et al. 2018) gives d log p_t(x(t)) / dt = -div f_tilde,
so, with the cut-off t_min (argument ``eps``),

    log p_tmin(x) = log p_T(x(T)) + int_tmin^T div f_tilde(x(t), t) dt,   x(t_min) = x.

Derived in notebooks/sde.md, eq. ``sde-likelihood``. The pair (x, delta) with
d delta / dt = div f_tilde is integrated from t_min up to T by ``scipy.integrate.solve_ivp``
(RK45); the prior term uses the SDE's exact prior density. The divergence is either exact (the
trace of the Jacobian, cheap in 2-D) or Hutchinson's estimate E[v^T (d f_tilde/dx) v] with
probes v held fixed through the solve (Grathwohl et al. 2019, eq. ``sde-hutchinson``), so each
probe gives one smooth ODE.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from diffnb._checks import check_positive, check_positive_int, check_samples
from diffnb.sde import SDE

__all__ = ["BATCH_SIZE", "MAX_NFE", "LikelihoodResult", "SolverBudgetError", "log_likelihood"]

# Defaults of the per-point solver (``solver="per_point"``).
BATCH_SIZE = 1024
MAX_NFE = 10_000
_MIN_ROWS = 32  # the smallest padded batch (see ``_padded_rows``)


class LikelihoodResult(NamedTuple):
    """log p_tmin(x) in nats per point (n,), the solver's NFE, and the Hutchinson stderr (n,).

    ``stderr`` is the standard error of the probe average, per point: the sample standard
    deviation of the ``num_probes`` single-probe estimates over sqrt(num_probes). It is None
    for the exact divergence and for a single probe.
    """

    log_prob: jax.Array
    nfe: int
    stderr: jax.Array | None
    point_nfe: np.ndarray | None = None


class SolverBudgetError(RuntimeError):
    """Some points' ODEs did not reach T within ``max_nfe`` field evaluations.

    Attributes:
      indices: (k,) the 0-based indices of those points in ``x``.
      result: the ``LikelihoodResult`` of all points, NaN at ``indices``; every other
        point's value is what it would have been without them (each point has its own steps).
    """

    def __init__(self, indices, result, max_nfe):
        shown = ", ".join(map(str, indices[:10])) + (", ..." if len(indices) > 10 else "")
        super().__init__(
            f"{len(indices)} point(s) of x did not finish within max_nfe={max_nfe} solver "
            f"evaluations each: indices [{shown}] (far outliers need many small steps); "
            "the other points' values are in this error's `result`, NaN at `indices`"
        )
        self.indices = indices
        self.result = result


def _velocity(sde, score_fn):
    return sde.probability_flow(score_fn)


def _exact_rhs(sde, score_fn, x, t_n):
    """(f_tilde, tr d f_tilde/dx) per point at per-point times t_n (n,): each point's own
    Jacobian, by forward mode."""
    v = _velocity(sde, score_fn)

    def v_one(x_i, t_i):
        return v(x_i[None], t_i[None])[0]

    jac = jax.vmap(jax.jacfwd(v_one))(x, t_n)  # (n, d, d)
    return v(x, t_n), jnp.trace(jac, axis1=-2, axis2=-1)[None, :]


def _hutchinson_rhs(sde, score_fn, x, t_n, probes):
    """(f_tilde, v_p^T (d f_tilde/dx) v_p per probe and point at times t_n): probes (P, n, d)
    -> divergences (P, n).

    One Jacobian-vector product of the batched field per probe: points do not interact, so
    the batched Jacobian is block diagonal and v^T J v is computed point by point.
    """
    v = _velocity(sde, score_fn)
    field = lambda y: v(y, t_n)  # noqa: E731

    def one_probe(e):
        return jax.jvp(field, (x,), (e,))[1]

    jv = jax.vmap(one_probe)(probes)  # (P, n, d)
    return field(x), jnp.sum(probes * jv, axis=-1)


def _field(sde, score_fn, x, t_n, probes):
    if probes is None:
        return _exact_rhs(sde, score_fn, x, t_n)
    return _hutchinson_rhs(sde, score_fn, x, t_n, probes)


@partial(jax.jit, static_argnames=("sde", "score_fn"))
def _batched_rhs(sde, score_fn, x, t, probes):
    """The augmented field of all points at one time t: (v (n, d), divergences (P, n))."""
    return _field(sde, score_fn, x, jnp.full((x.shape[0],), t, x.dtype), probes)


def _draw_probes(key, probe, shape):
    if probe == "rademacher":
        return jax.random.rademacher(key, shape, dtype=jnp.float32)
    return jax.random.normal(key, shape, dtype=jnp.float32)


# Dormand-Prince 5(4), the pair of scipy's RK45: nodes, stages, 5th-order weights, error weights.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


@partial(jax.jit, static_argnames=("sde", "score_fn"))
def _dopri5_per_point(sde, score_fn, x, probes, rtol, atol, eps, max_nfe):
    """Integrate (x, delta) from eps to T with a step size of each point's own.

    The Dormand-Prince pair of scipy's RK45 with its error norm (the RMS over one point's
    components of err / (atol + rtol max(|y|, |y_new|))), its step-size rule (safety 0.9,
    factors in [0.2, 10]) and its initial step; but every point accepts, rejects and sizes its
    steps alone, so its value does not depend on the other points of the batch. All points
    are evaluated together at their own times; a point that is done (t = T) or has spent
    ``max_nfe`` evaluations stops moving. Returns (x_T, delta (P, n), nfe (n,), done (n,),
    number of batched evaluations).
    """
    n, dim = x.shape
    t_end = jnp.asarray(sde.T, x.dtype)

    def f(t_n, y):
        v, div = _field(sde, score_fn, y[:, :dim], t_n, probes)
        return jnp.concatenate([v, div.T], axis=1)

    def rms(z):
        return jnp.sqrt(jnp.mean(z**2, axis=1))

    y0 = jnp.concatenate([x, jnp.zeros((n, 1 if probes is None else probes.shape[0]), x.dtype)], 1)
    t0 = jnp.full((n,), eps, x.dtype)
    f0 = f(t0, y0)
    # scipy's select_initial_step, point by point.
    scale = atol + jnp.abs(y0) * rtol
    d0, d1 = rms(y0 / scale), rms(f0 / scale)
    h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-30))
    h0 = jnp.minimum(h0, t_end - t0)
    f1 = f(t0 + h0, y0 + h0[:, None] * f0)
    d2 = rms((f1 - f0) / scale) / h0
    small = (d1 <= 1e-15) & (d2 <= 1e-15)
    h1 = jnp.where(small, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / jnp.maximum(d1, d2)) ** 0.2)
    h = jnp.minimum(jnp.minimum(100 * h0, h1), t_end - t0)

    def active(state):
        t, _, _, _, nfe, _ = state
        return (t < t_end) & (nfe + 6 <= max_nfe)

    def cond(state):
        return jnp.any(active(state))

    def body(state):
        t, y, k1, h, nfe, calls = state
        go = active(state)
        h = jnp.minimum(h, t_end - t)
        ks = [k1]
        for c, a in zip(_C[1:], _A[1:], strict=True):
            dy = sum(a_j * k_j for a_j, k_j in zip(a, ks, strict=False))
            ks.append(f(t + c * h, y + h[:, None] * dy))
        y_new = y + h[:, None] * sum(b * k for b, k in zip(_B, ks, strict=True))
        k7 = f(t + h, y_new)
        err = h[:, None] * sum(e * k for e, k in zip(_E, ks + [k7], strict=True))
        norm = rms(err / (atol + jnp.maximum(jnp.abs(y), jnp.abs(y_new)) * rtol))
        accept = go & (norm < 1.0)
        factor = jnp.where(norm == 0, 10.0, 0.9 * jnp.maximum(norm, 1e-30) ** -0.2)
        factor = jnp.clip(factor, 0.2, jnp.where(norm < 1.0, 10.0, 1.0))
        t = jnp.where(accept, jnp.where(h >= t_end - t, t_end, t + h), t)
        y = jnp.where(accept[:, None], y_new, y)
        k1 = jnp.where(accept[:, None], k7, k1)
        h = jnp.where(go, h * factor, h)
        return t, y, k1, h, nfe + 6 * go, calls + 6

    nfe0 = jnp.full((n,), 2, jnp.int32)
    state = (t0, y0, f0, h, nfe0, jnp.asarray(2, jnp.int32))
    t, y, _, _, nfe, calls = jax.lax.while_loop(cond, body, state)
    return y[:, :dim], y[:, dim:].T, nfe, t >= t_end, calls


def _padded_rows(n: int, batch_size: int) -> int:
    """Rows of every batch: batch_size, or for n < batch_size the power of two >= n from 32.

    The compiled field rounds a row's arithmetic differently for different numbers of rows
    (vectorised loops and their remainders), and the adaptive steps can grow such an ulp into
    the solver's error (~1e-2 nats, measured: 20 points took other steps beside a 21st). With
    the same padded shape a point's value is bit for bit its own, whatever else is in the batch.
    """
    if n >= batch_size:
        return batch_size
    return min(batch_size, max(_MIN_ROWS, 1 << (n - 1).bit_length()))


def _per_point_log_likelihood(score_fn, sde, x, probes, rtol, atol, eps, batch_size, max_nfe):
    """``log_likelihood`` with ``solver="per_point"``: batches of the jitted per-point solver."""
    n, dim = x.shape
    padded = _padded_rows(n, batch_size)
    log_prob, stderr, nfe, done = [], [], [], []
    calls = 0
    for start in range(0, n, batch_size):
        rows = np.arange(start, min(start + batch_size, n))
        pad = np.concatenate([rows, np.full(padded - rows.size, rows[0])])  # one shape
        p = None if probes is None else probes[:, pad]
        x_T, delta, nfe_b, done_b, calls_b = _dopri5_per_point(
            sde, score_fn, x[pad], p, rtol, atol, eps, max_nfe
        )
        per_probe = np.asarray(sde.prior_log_prob(x_T), np.float64)[None] + np.asarray(delta)
        keep = slice(0, rows.size)
        log_prob.append(per_probe.mean(axis=0)[keep])
        if per_probe.shape[0] > 1:
            stderr.append((per_probe.std(axis=0, ddof=1) / np.sqrt(per_probe.shape[0]))[keep])
        nfe.append(np.asarray(nfe_b)[keep])
        done.append(np.asarray(done_b)[keep])
        calls += int(calls_b)
    log_prob, done = np.concatenate(log_prob), np.concatenate(done)
    log_prob[~done] = np.nan
    result = LikelihoodResult(
        jnp.asarray(log_prob),
        calls,
        jnp.asarray(np.concatenate(stderr)) if stderr else None,
        np.concatenate(nfe),
    )
    if not done.all():
        raise SolverBudgetError(np.flatnonzero(~done), result, max_nfe)
    return result


def log_likelihood(
    key: jax.Array,
    score_fn: Callable[[jax.Array, jax.Array], jax.Array],
    sde: SDE,
    x: jax.Array,
    divergence: str = "exact",
    probe: str = "rademacher",
    num_probes: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    eps: float = 1e-3,
    solver: str = "scipy",
    batch_size: int = BATCH_SIZE,
    max_nfe: int = MAX_NFE,
) -> LikelihoodResult:
    """log p(x) in nats for each point of x (n, d), by the probability-flow ODE (eq. above).

    The data are taken as the state at the cut-off t_min = ``eps``, so the result is
    log p_tmin(x), the density of the model's marginal at t_min: the data law smoothed by the
    kernel q(x_tmin | x_0) (for the VP SDE with the defaults, scaled by 0.99995 and blurred by a
    Gaussian of std 0.0105). It avoids the singular score as t -> 0; the price is a bias of
    about (d/2) sigma_tmin^2 / var_data
    nats, 0.002 for the nine Gaussians (component variance 1/16).

    ``divergence="exact"`` uses the trace of the per-point Jacobian (forward mode, d
    passes); ``"hutchinson"`` uses M = ``num_probes`` probes v (``"rademacher"`` +-1 entries or
    ``"gaussian"``), drawn once from ``key`` and fixed through the solve, and averages the
    resulting log-densities; each probe is its own ODE state, so the per-point spread across
    probes gives ``stderr`` (None for one probe). ``key`` is unused by the exact mode.

    The prior term is the SDE's prior p_T, not the true marginal q_T: their gap
    log p_T(x_T) - log q_T(x_T) enters every point. It is negligible for VP and sub-VP at
    T = 1; for VE with sigma_max = 10 on the nine Gaussians it has mean ~0 but reaches 0.2
    nats for points that end far out in the tails (tests/test_likelihood.py).

    ``nfe`` counts the solver's evaluations of the augmented field, each one batched
    velocity plus its divergence. Tolerances default to 1e-5.

    Solvers. ``"scipy"`` (the default) solves all points as one RK45 system of
    ``scipy.integrate.solve_ivp``: its step size is set by the hardest point, so one outlier
    slows them all, and each point's value depends slightly (within the tolerances) on the
    others. ``"per_point"`` runs the same Dormand-Prince pair jitted in JAX, with every point
    choosing its own steps, in batches of ``batch_size`` points (default ``BATCH_SIZE`` =
    1024), each padded to ``batch_size`` rows (for fewer points, to the power of two from 32
    up that holds them), so that a point's value is bit for bit the same whatever the other
    points of its batch, as long as the padded size is the same (with another padded size
    it changes within the solver's error, about 1e-2 nats); a point that has not
    reached T after ``max_nfe`` evaluations (default ``MAX_NFE`` = 10,000) stops, and
    ``SolverBudgetError`` names it after all batches are done, carrying the other points'
    values, which are those they get without it. There ``nfe`` is the number of batched
    evaluations over all batches and ``point_nfe`` (n,) each point's own count. Its state is
    float32 (scipy's is float64).
    """
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a diffnb.sde.SDE, got {type(sde).__name__}")
    x = check_samples(x, "x").astype(jnp.float32)
    eps = float(eps)
    if not 0.0 < eps < sde.T:
        raise ValueError(f"eps must lie in (0, T) = (0, {sde.T}), got {eps}")
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    if probe not in ("rademacher", "gaussian"):
        raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
    num_probes = check_positive_int(num_probes, "num_probes")
    rtol, atol = check_positive(rtol, "rtol"), check_positive(atol, "atol")
    if solver not in ("scipy", "per_point"):
        raise ValueError(f"solver must be 'scipy' or 'per_point', got {solver!r}")
    batch_size = check_positive_int(batch_size, "batch_size")
    max_nfe = check_positive_int(max_nfe, "max_nfe")

    n, dim = x.shape
    if divergence == "exact":
        num_div, probes = 1, None
    else:
        num_div = num_probes
        probes = _draw_probes(key, probe, (num_probes, n, dim))
    if solver == "per_point":
        return _per_point_log_likelihood(
            score_fn, sde, x, probes, rtol, atol, eps, batch_size, max_nfe
        )

    def augmented(x_32, t):
        return _batched_rhs(sde, score_fn, x_32, t, probes)

    def rhs(t, y):
        x_32 = jnp.asarray(y[: n * dim].reshape(n, dim), dtype=jnp.float32)
        v, div = augmented(x_32, t)
        return np.concatenate(
            [np.asarray(v, np.float64).ravel(), np.asarray(div, np.float64).ravel()]
        )

    y0 = np.concatenate([np.asarray(x, np.float64).ravel(), np.zeros(num_div * n)])
    sol = integrate.solve_ivp(rhs, (eps, sde.T), y0, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise RuntimeError(f"likelihood ODE solver failed: {sol.message}")

    end = sol.y[:, -1]
    x_T = jnp.asarray(end[: n * dim].reshape(n, dim), dtype=jnp.float32)
    delta = end[n * dim :].reshape(num_div, n)
    per_probe = np.asarray(sde.prior_log_prob(x_T), np.float64)[None, :] + delta  # (P, n)
    stderr = None
    if divergence == "hutchinson" and num_probes > 1:
        stderr = jnp.asarray(per_probe.std(axis=0, ddof=1) / np.sqrt(num_probes))
    return LikelihoodResult(jnp.asarray(per_probe.mean(axis=0)), int(sol.nfev), stderr)
