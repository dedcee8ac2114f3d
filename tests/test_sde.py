"""The forward SDEs: kernels against simulation, the probability flow against the continuity
equation, the reverse SDE against its formula, and every bad input.

Expected values come from closed forms written out here (beta, B, sigma by hand), from
Monte Carlo simulation, or from ``data.log_prob`` / ``data.score`` (tested in test_data.py).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import data
from diffnb.sde import SDE, VESDE, VPSDE, SubVPSDE, exact_score

SDES = {"ve": VESDE(), "vp": VPSDE(), "subvp": SubVPSDE()}


# Closed forms for the default processes, written out independently of the module.
def _B(t):  # int_0^t (0.1 + 19.9 u) du
    return 0.1 * t + 0.5 * 19.9 * t**2


def _kernel(name, t):
    """(mean scale, std) of q_0t from the chapter's formulas."""
    if name == "ve":
        return 1.0, 0.01 * 1000.0**t
    if name == "vp":
        return math.exp(-_B(t) / 2), math.sqrt(1 - math.exp(-_B(t)))
    return math.exp(-_B(t) / 2), 1 - math.exp(-_B(t))


def _coefficients(name, t):
    """(f / x, g) of the default processes at scalar t."""
    beta = 0.1 + 19.9 * t
    if name == "ve":
        return 0.0, 0.01 * 1000.0**t * math.sqrt(2 * math.log(1000.0))
    if name == "vp":
        return -beta / 2, math.sqrt(beta)
    return -beta / 2, math.sqrt(beta * (1 - math.exp(-2 * _B(t))))


@functools.partial(jax.jit, static_argnames=("sde", "num_segments", "steps_per_segment"))
def _euler_maruyama(key, sde, x0, num_segments, steps_per_segment, t_end):
    """Euler–Maruyama of the forward SDE from 0 to t_end; the state after each segment."""
    n = x0.shape[0]
    dt = t_end / (num_segments * steps_per_segment)

    def step(x, inputs):
        k, t = inputs
        tt = jnp.full((n,), t)
        z = jax.random.normal(k, x.shape)
        return x + sde.drift(x, tt) * dt + (sde.diffusion(tt) * jnp.sqrt(dt))[:, None] * z, None

    def segment(x, inputs):
        k, s = inputs
        ts = (s * steps_per_segment + jnp.arange(steps_per_segment)) * dt
        x, _ = jax.lax.scan(step, x, (jax.random.split(k, steps_per_segment), ts))
        return x, x

    keys = jax.random.split(key, num_segments)
    return jax.lax.scan(segment, x0, (keys, jnp.arange(num_segments)))[1]


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_matches_euler_maruyama(name):
    """Mean and variance of x_t | x_0 from simulation agree with marginal() to 4 s.e."""
    sde, n = SDES[name], 20_000
    key_start, key_path = jax.random.split(jax.random.key(0))
    x0 = jnp.broadcast_to(jnp.array([1.5, -0.5]), (n, 2))
    if name == "ve":  # the VE process starts from the data blurred by sigma_min (see VESDE)
        x0 = x0 + 0.01 * jax.random.normal(key_start, (n, 2))
    paths = _euler_maruyama(key_path, sde, x0, 4, 1000, 1.0)
    for k, t in enumerate([0.25, 0.5, 0.75, 1.0]):
        scale, std = _kernel(name, t)
        got_scale, got_std = sde.marginal(jnp.array([t]))
        np.testing.assert_allclose([got_scale[0], got_std[0]], [scale, std], rtol=1e-5)
        x = np.asarray(paths[k], dtype=np.float64)
        mean_err = np.abs(x.mean(0) - scale * np.array([1.5, -0.5]))
        var_err = np.abs(x.var(0, ddof=1) - std**2)
        assert np.all(mean_err < 4 * std / math.sqrt(n)), (t, mean_err)
        assert np.all(var_err < 4 * std**2 * math.sqrt(2 / (n - 1))), (t, var_err)


@pytest.mark.parametrize("name", list(SDES))
def test_coefficients_and_prior(name):
    sde = SDES[name]
    t = jnp.array([0.0, 0.3, 1.0])
    x = jnp.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    expected = [_coefficients(name, float(s)) for s in t]
    np.testing.assert_allclose(
        sde.drift(x, t), np.array([c[0] for c in expected])[:, None] * x, rtol=1e-5
    )
    np.testing.assert_allclose(sde.diffusion(t), [c[1] for c in expected], rtol=1e-5)
    # The prior is N(0, s_T^2 I) with s_T the kernel std at T (up to the VP/sub-VP residual).
    prior_std = 10.0 if name == "ve" else 1.0
    want = -0.5 * np.sum(np.asarray(x) ** 2, 1) / prior_std**2 - np.log(2 * np.pi * prior_std**2)
    np.testing.assert_allclose(sde.prior_log_prob(x), want, rtol=1e-5)
    draws = np.asarray(sde.prior_sample(jax.random.key(3), 50_000, 2), dtype=np.float64)
    assert draws.shape == (50_000, 2)
    assert np.all(np.abs(draws.std(0) / prior_std - 1) < 4 * math.sqrt(0.5 / 50_000))
    assert np.all(np.abs(draws.mean(0)) < 4 * prior_std / math.sqrt(50_000))


def _continuity_residual(name, nine, vector_field, x, t):
    """d/dt log q_t + div v + v . grad log q_t, per point; zero when v transports q_t."""
    scale_std = lambda s: _kernel(name, s)  # noqa: E731
    log_q = lambda y, s: data.log_prob(nine, y, *scale_std(s))  # noqa: E731
    h = 1e-3
    dlogq_dt = (
        np.asarray(log_q(x, t + h), np.float64) - np.asarray(log_q(x, t - h), np.float64)
    ) / (2 * h)
    tt = jnp.full((x.shape[0],), t)
    v = vector_field(x, tt)
    one = lambda y, s: vector_field(y[None], s[None])[0]  # noqa: E731
    div = jnp.trace(jax.vmap(jax.jacfwd(one))(x, tt), axis1=1, axis2=2)
    transport = jnp.sum(v * data.score(nine, x, *scale_std(t)), 1)
    terms = [dlogq_dt, np.asarray(div), np.asarray(transport)]
    return sum(terms), sum(np.abs(term) for term in terms)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("t", [0.05, 0.3, 0.8])
def test_probability_flow_transports_the_marginals(name, t, nine):
    """v = f - g^2 s / 2 with the exact score solves the continuity equation of q_t.

    The reverse drift f - g^2 s in its place (the factor 1/2 dropped) does not.
    """
    sde = SDES[name]
    score = exact_score(sde, nine)
    x = data.sample(jax.random.key(4), data.noised(nine, *_kernel(name, t)), 64)
    residual, size = _continuity_residual(name, nine, sde.probability_flow(score), x, t)
    assert np.all(np.abs(residual) <= 2e-3 * size + 1e-3), np.max(np.abs(residual) / size)
    wrong, size = _continuity_residual(name, nine, sde.reverse(score).drift, x, t)
    assert np.max(np.abs(wrong) / size) > 0.05


@pytest.mark.parametrize("name", list(SDES))
def test_reverse_sde_formula(name, nine):
    sde = SDES[name]
    score = exact_score(sde, nine)
    x = jnp.array([[1.0, -2.0], [0.5, 0.0], [3.0, 1.0]])
    t = jnp.array([0.1, 0.5, 0.9])
    f_over_x, g = map(np.array, zip(*[_coefficients(name, float(s)) for s in t], strict=True))
    s = np.asarray(score(x, t))
    reverse = sde.reverse(score)
    assert reverse.T == sde.T
    np.testing.assert_allclose(reverse.diffusion(t), g, rtol=1e-5)
    want = f_over_x[:, None] * np.asarray(x) - (g**2)[:, None] * s
    np.testing.assert_allclose(reverse.drift(x, t), want, rtol=1e-4, atol=1e-4)
    pf = f_over_x[:, None] * np.asarray(x) - 0.5 * (g**2)[:, None] * s
    np.testing.assert_allclose(sde.probability_flow(score)(x, t), pf, rtol=1e-4, atol=1e-4)
    # The reverse-diffusion step from t to t - dt undoes the forward step from t - dt to t.
    dt = 0.01
    f_fwd, g_fwd = sde.discretize(x, t - dt, dt)
    f_rev, g_rev = reverse.discretize(x, t, dt)
    np.testing.assert_allclose(g_rev, g_fwd, rtol=1e-6)
    want = -np.asarray(f_fwd) + (np.asarray(g_fwd) ** 2)[:, None] * s
    np.testing.assert_allclose(f_rev, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["ve", "vp"])
def test_exact_discretisation_keeps_the_marginal(name):
    """Ten coarse VE (NCSN) or VP (DDPM) steps land exactly on the kernel at each time."""
    sde, n = SDES[name], 20_000
    key_start, key_steps = jax.random.split(jax.random.key(5))
    x = jnp.broadcast_to(jnp.array([1.5, -0.5]), (n, 2))
    if name == "ve":
        x = x + 0.01 * jax.random.normal(key_start, (n, 2))
    for k, key in enumerate(jax.random.split(key_steps, 10)):
        f, g = sde.discretize(x, k / 10, 0.1)
        x = x + f + g[:, None] * jax.random.normal(key, (n, 2))
        scale, std = _kernel(name, (k + 1) / 10)
        xs = np.asarray(x, np.float64)
        assert np.all(np.abs(xs.mean(0) - scale * np.array([1.5, -0.5])) < 4 * std / math.sqrt(n))
        assert np.all(np.abs(xs.var(0, ddof=1) - std**2) < 4 * std**2 * math.sqrt(2 / (n - 1)))


@pytest.mark.parametrize("name", list(SDES))
def test_discretize_is_first_order_euler(name):
    """Every step agrees with Euler, F = f dt and G = g sqrt(dt), to O(dt) relative error."""
    sde = SDES[name]
    x = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    t = jnp.array([0.2, 0.6])
    errors = []
    for dt in (1e-2, 1e-3):
        f, g = sde.discretize(x, t, dt)
        f_over_x, g_ref = map(
            np.array, zip(*[_coefficients(name, float(s)) for s in t], strict=True)
        )
        g_err = np.max(np.abs(np.asarray(g) / (g_ref * math.sqrt(dt)) - 1))
        f_err = np.max(np.abs(np.asarray(f) - f_over_x[:, None] * np.asarray(x) * dt))
        errors.append((g_err, f_err / dt))
    if name == "subvp":  # the default Euler step: exact equality
        assert errors[0][0] < 1e-5 and errors[0][1] < 1e-4
    else:
        assert errors[1][0] < 0.2 * errors[0][0]
        assert errors[1][1] <= 0.2 * errors[0][1] + 1e-3


@pytest.mark.parametrize("name", list(SDES))
def test_exact_score_matches_finite_differences(name, nine):
    score = exact_score(SDES[name], nine)
    x = jax.random.normal(jax.random.key(6), (16, 2)) * 2.0
    for t in (0.1, 0.5, 1.0):
        scale, std = _kernel(name, t)
        h = 1e-2 * max(std, 0.25)
        fd = np.stack(
            [
                (
                    np.asarray(data.log_prob(nine, x + h * e[None, :], scale, std), np.float64)
                    - np.asarray(data.log_prob(nine, x - h * e[None, :], scale, std), np.float64)
                )
                / (2 * h)
                for e in jnp.eye(2)
            ],
            axis=1,
        )
        got = np.asarray(score(x, jnp.full((16,), t)))
        np.testing.assert_allclose(got, fd, rtol=2e-2, atol=2e-2 * np.max(np.abs(fd)))


def test_sdes_are_hashable_and_jit_static():
    assert len({VESDE(), VESDE(), VPSDE(), SubVPSDE()}) == 3
    f = jax.jit(lambda sde, t: sde.marginal(t)[1], static_argnums=0)
    np.testing.assert_allclose(f(VPSDE(), jnp.array([0.5])), [_kernel("vp", 0.5)[1]], rtol=1e-5)
    assert issubclass(VESDE, SDE) and issubclass(SubVPSDE, SDE)


@pytest.mark.parametrize(
    "make,argument",
    [
        (lambda: VESDE(sigma_min=0.0), "sigma_min"),
        (lambda: VESDE(sigma_min=-1.0), "sigma_min"),
        (lambda: VESDE(sigma_max=0.005), "sigma_max"),
        (lambda: VESDE(sigma_max=float("nan")), "sigma_max"),
        (lambda: VESDE(T=0.0), "T"),
        (lambda: VPSDE(beta_min=0.0), "beta_min"),
        (lambda: VPSDE(beta_max=0.05), "beta_max"),
        (lambda: VPSDE(T=-1.0), "T"),
        (lambda: SubVPSDE(beta_max=float("inf")), "beta_max"),
        (lambda: SubVPSDE(T=float("nan")), "T"),
        (lambda: VPSDE().prior_sample(jax.random.key(0), 0, 2), "n"),
        (lambda: VESDE().prior_sample(jax.random.key(0), 4, 1.5), "dim"),
        (lambda: VPSDE().drift(jnp.ones((3, 2)), jnp.ones(4)), "t"),
        (lambda: VPSDE().discretize(jnp.ones(3), 0.1, 0.1), "x"),
        (lambda: exact_score(VESDE(), data.nine_gaussians())(jnp.ones((3, 2)), jnp.ones(2)), "t"),
        (lambda: exact_score(VPSDE(), data.nine_gaussians())(jnp.ones((3, 3)), 0.5), "x"),
    ],
)
def test_bad_input_names_the_argument(make, argument):
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        make()
