"""Samplers driven by the exact score of the nine Gaussians must reach the metrics' noise floor.

The floor (notebooks/data.md, n = 5000, 95th percentile): mode TV 0.022, MMD^2(h = 0.5)
2.9e-4, variance ratio in [0.969, 1.019]; the thresholds below leave a margin over it.
With the exact score any excess is the sampler's own error (discretisation, schedule,
indexing), not learning error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import data, metrics, samplers, schedules, sde

N = 5000
MAX_TV, MAX_MMD2, RATIO = 0.03, 5e-4, (0.95, 1.05)


def at_floor(result, mixture, seed=2):
    """Assert the three floor criteria; return the scores for the failure message."""
    x = np.asarray(result.samples)
    assert x.shape == (N, 2) and np.all(np.isfinite(x))
    scores = metrics.evaluate(jax.random.key(seed), result.samples, mixture)
    msg = f"{scores}, nfe={result.nfe}"
    assert float(scores.mode_tv) <= MAX_TV, msg
    assert float(scores.mmd2) <= MAX_MMD2, msg
    assert RATIO[0] <= float(scores.var_ratio) <= RATIO[1], msg
    return scores


@pytest.fixture(scope="module")
def vp():
    return sde.VPSDE()


@pytest.fixture(scope="module")
def ve():
    return sde.VESDE()


@pytest.fixture(scope="module")
def ddpm100(vp):
    """Ho et al.'s discretisation of the VP SDE in 100 steps (first order in 1/N)."""
    return schedules.ddpm_from_vp(vp, 100)


@pytest.fixture(scope="module")
def ddpm1000(vp):
    """Ho et al.'s schedule, linspace(1e-4, 0.02, 1000), as the VP discretisation."""
    return schedules.ddpm_from_vp(vp, 1000)


@pytest.fixture(scope="module")
def ncsn(ve):
    return schedules.ncsn_from_ve(ve, 10)


KEY = jax.random.key(1)  # one sampling key for every floor test


# ---------------------------------------------------------------------------------------------
# Every sampler reaches the floor with the exact score.


LANGEVIN = {"levels": 20, "steps_per_level": 50, "step_size": 5e-5}  # 1000 score calls


@pytest.mark.long
def test_annealed_langevin_reaches_floor(nine, ve):
    schedule = schedules.ncsn_from_ve(ve, LANGEVIN["levels"])
    result = samplers.annealed_langevin(
        KEY, schedules.exact_ncsn_score(nine), schedule, N,
        steps_per_level=LANGEVIN["steps_per_level"], step_size=LANGEVIN["step_size"],
    )  # fmt: skip
    assert result.nfe == 1000
    at_floor(result, nine)


@pytest.mark.long
def test_langevin_linear_step_rule_fails(nine, ve):
    """Pitfall: the same run with alpha_i proportional to sigma_i, not sigma_i^2, has steps
    up to 1000 times too small at the top levels and never leaves the wide initial cloud."""
    schedule = schedules.ncsn_from_ve(ve, LANGEVIN["levels"])
    wrong = samplers.annealed_langevin(
        KEY, schedules.exact_ncsn_score(nine), schedule, N, step_exponent=1.0,
        steps_per_level=LANGEVIN["steps_per_level"], step_size=LANGEVIN["step_size"],
    )  # fmt: skip
    assert float(metrics.mode_tv(wrong.samples, nine)) > 3 * MAX_TV


@pytest.mark.long  # 1000 steps; test_ancestral_indices_and_silent_last_step runs by default
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ddpm_ancestral_reaches_floor(nine, ddpm1000, variance):
    eps_fn = schedules.exact_eps(ddpm1000, nine)
    result = samplers.ddpm_ancestral(KEY, eps_fn, ddpm1000, N, variance=variance)
    assert result.nfe == 1000
    at_floor(result, nine)


def test_ddim_reaches_floor_on_a_subsequence(nine, ddpm1000):
    eps_fn = schedules.exact_eps(ddpm1000, nine)
    result = samplers.ddim(KEY, eps_fn, ddpm1000, N, num_steps=200)
    assert result.nfe == 200
    at_floor(result, nine)


@pytest.mark.parametrize(
    "process, num_steps",
    [("vp", 100), ("ve", 100), pytest.param("subvp", 200, marks=pytest.mark.long)],
)
def test_euler_maruyama_reaches_floor(nine, process, num_steps):
    forward = {"vp": sde.VPSDE(), "subvp": sde.SubVPSDE(), "ve": sde.VESDE()}[process]
    score = sde.exact_score(forward, nine)
    result = samplers.euler_maruyama(KEY, score, forward, N, num_steps=num_steps)
    assert result.nfe == num_steps
    at_floor(result, nine)


@pytest.mark.parametrize(
    "process, predictor",
    [("vp", "reverse_diffusion")]
    + [pytest.param(p, q, marks=pytest.mark.long) for p, q in [
        ("ve", "reverse_diffusion"), ("subvp", "reverse_diffusion"), ("vp", "euler_maruyama"),
        ("ve", "euler_maruyama"), ("subvp", "euler_maruyama")]],
)  # fmt: skip
def test_predictor_corrector_reaches_floor(nine, process, predictor):
    forward = {"vp": sde.VPSDE(), "subvp": sde.SubVPSDE(), "ve": sde.VESDE()}[process]
    score = sde.exact_score(forward, nine)
    result = samplers.predictor_corrector(KEY, score, forward, N, predictor=predictor)
    assert result.nfe == 400  # 200 steps, one predictor and one corrector call each
    at_floor(result, nine)


def test_predictor_alone_overdisperses_at_100_steps(nine, vp):
    """Without the corrector the reverse-diffusion predictor at 100 steps is DDPM with
    sigma^2 = beta at N = 100: modes about 13% too wide, far outside the floor."""
    result = samplers.predictor_corrector(
        KEY, sde.exact_score(vp, nine), vp, N, num_steps=100, corrector_steps=0
    )
    assert result.nfe == 100
    assert float(metrics.variance_ratio(result.samples, nine)) > 1.08


@pytest.mark.parametrize("process", ["vp", pytest.param("ve", marks=pytest.mark.long)])
def test_probability_flow_reaches_floor_cheaply(nine, process):
    forward = {"vp": sde.VPSDE(), "ve": sde.VESDE()}[process]
    result = samplers.probability_flow_ode(KEY, sde.exact_score(forward, nine), forward, N)
    assert result.nfe <= 150
    at_floor(result, nine)


# ---------------------------------------------------------------------------------------------
# Indices, trajectories and reproducibility, on small problems.


def test_ancestral_indices_and_silent_last_step(ddpm100):
    """Steps run i = 99..0: an eps_fn that poisons any other index leaves no NaN, and with
    eps = 0 the last step is y_0 = y_1 / sqrt(alpha_0), without noise."""
    num = ddpm100.betas.shape[0]

    def eps_fn(x, i):
        bad = (i < 0) | (i >= num)
        return jnp.where(bad[:, None], jnp.nan, 0.0) * x

    result = samplers.ddpm_ancestral(jax.random.key(3), eps_fn, ddpm100, 64, return_trajectory=True)
    path = np.asarray(result.trajectory)
    assert path.shape == (num + 1, 64, 2) and np.all(np.isfinite(path))
    expected = path[-2] / np.sqrt(float(ddpm100.alphas[0]))
    np.testing.assert_allclose(path[-1], expected, rtol=1e-6)


def _small_runs(vp, ncsn, ddpm100, nine):
    """(name, call(key) -> SamplerResult, expected number of trajectory entries)."""
    score = sde.exact_score(vp, nine)
    ncsn_score = schedules.exact_ncsn_score(nine)
    eps_fn = schedules.exact_eps(ddpm100, nine)
    n, tr = 32, {"return_trajectory": True}
    levels = ncsn.sigmas.shape[0]
    return [
        ("langevin", lambda k: samplers.annealed_langevin(
            k, ncsn_score, ncsn, n, steps_per_level=5, **tr), levels + 1),
        ("langevin+denoise", lambda k: samplers.annealed_langevin(
            k, ncsn_score, ncsn, n, steps_per_level=5, denoise=True, **tr), levels + 2),
        ("ancestral", lambda k: samplers.ddpm_ancestral(k, eps_fn, ddpm100, n, **tr), 101),
        ("ddim", lambda k: samplers.ddim(k, eps_fn, ddpm100, n, 10, **tr), 11),
        ("em", lambda k: samplers.euler_maruyama(k, score, vp, n, 20, **tr), 21),
        ("pc", lambda k: samplers.predictor_corrector(k, score, vp, n, 20, **tr), 21),
        ("pf", lambda k: samplers.probability_flow_ode(k, score, vp, n, rtol=1e-3,
                                                       atol=1e-3, **tr), None),
    ]  # fmt: skip


def test_trajectories_and_reproducibility(vp, ncsn, ddpm100, nine):
    for name, run, steps in _small_runs(vp, ncsn, ddpm100, nine):
        first, again = run(jax.random.key(7)), run(jax.random.key(7))
        other = run(jax.random.key(8))
        path = np.asarray(first.trajectory)
        if steps is not None:
            assert path.shape == (steps, 32, 2), name
        np.testing.assert_array_equal(path[-1], np.asarray(first.samples), err_msg=name)
        np.testing.assert_array_equal(np.asarray(again.samples), np.asarray(first.samples))
        assert first.nfe == again.nfe
        assert not np.allclose(np.asarray(other.samples), np.asarray(first.samples)), name
    no_path = samplers.euler_maruyama(jax.random.key(7), sde.exact_score(vp, nine), vp, 4, 5)
    assert no_path.trajectory is None


def test_pf_ode_trajectory_starts_at_the_prior(vp, nine):
    key = jax.random.key(11)
    result = samplers.probability_flow_ode(
        key, sde.exact_score(vp, nine), vp, 16, rtol=1e-3, atol=1e-3, return_trajectory=True
    )
    np.testing.assert_allclose(result.trajectory[0], vp.prior_sample(key, 16, 2), rtol=1e-6)
    assert result.trajectory.shape[0] >= 2 and result.nfe >= result.trajectory.shape[0]


def test_pf_ode_from_given_points_is_the_gaussian_flow(vp):
    """For data N(0, v0 I) the VP flow is the rescaling x(t) = x(T) sqrt(v(t) / v(T)),
    v = e^{-B} v0 + 1 - e^{-B} (notebooks/sde.md, exercise on the Gaussian flow)."""
    v0 = 0.3
    gaussian = data.gaussian_mixture(np.zeros((1, 2)), [v0], [1.0])
    x_T = 3.0 * jax.random.normal(jax.random.key(12), (64, 2))
    result = samplers.probability_flow_ode(
        None, sde.exact_score(vp, gaussian), vp, 64, x_init=x_T, eps=1e-3
    )

    def v(t):
        b = float(vp.integrated_beta(t))
        return np.exp(-b) * v0 - np.expm1(-b)

    want = np.asarray(x_T) * np.sqrt(v(1e-3) / v(vp.T))
    np.testing.assert_allclose(np.asarray(result.samples), want, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Bad input names the argument.


def _bad_calls(vp, ncsn, ddpm100, nine):
    score = sde.exact_score(vp, nine)
    eps_fn = schedules.exact_eps(ddpm100, nine)
    key = jax.random.key(0)
    return [
        ("n", lambda: samplers.euler_maruyama(key, score, vp, 0)),
        ("n", lambda: samplers.ddpm_ancestral(key, eps_fn, ddpm100, -3)),
        ("dim", lambda: samplers.probability_flow_ode(key, score, vp, 4, dim=0)),
        ("variance", lambda: samplers.ddpm_ancestral(key, eps_fn, ddpm100, 4, variance="sqrt")),
        ("num_steps", lambda: samplers.ddim(key, eps_fn, ddpm100, 4, num_steps=101)),
        ("num_steps", lambda: samplers.ddim(key, eps_fn, ddpm100, 4, 5, timesteps=[9, 0])),
        ("num_steps", lambda: samplers.ddim(key, eps_fn, ddpm100, 4)),
        ("timesteps", lambda: samplers.ddim(key, eps_fn, ddpm100, 4, timesteps=[0, 9])),
        ("timesteps", lambda: samplers.ddim(key, eps_fn, ddpm100, 4, timesteps=[100, 0])),
        ("timesteps", lambda: samplers.ddim(key, eps_fn, ddpm100, 4, timesteps=[9.0, 0.0])),
        ("num_steps", lambda: samplers.euler_maruyama(key, score, vp, 4, num_steps=0)),
        ("predictor", lambda: samplers.predictor_corrector(key, score, vp, 4, predictor="rk")),
        ("snr", lambda: samplers.predictor_corrector(key, score, vp, 4, snr=-0.1)),
        ("corrector_steps", lambda: samplers.predictor_corrector(
            key, score, vp, 4, corrector_steps=-1)),
        ("eps", lambda: samplers.euler_maruyama(key, score, vp, 4, eps=0.0)),
        ("eps", lambda: samplers.probability_flow_ode(key, score, vp, 4, eps=vp.T)),
        ("rtol", lambda: samplers.probability_flow_ode(key, score, vp, 4, rtol=0.0)),
        ("x_init", lambda: samplers.probability_flow_ode(
            key, score, vp, 4, x_init=jnp.ones((3, 2)))),
        ("x_init", lambda: samplers.probability_flow_ode(
            key, score, vp, 1, x_init=jnp.array([[jnp.nan, 0.0]]))),
        ("schedule", lambda: samplers.annealed_langevin(key, score, ddpm100, 4)),
        ("schedule", lambda: samplers.ddim(key, eps_fn, ncsn, 4, 10)),
        ("sde", lambda: samplers.euler_maruyama(key, score, ddpm100, 4)),
        ("steps_per_level", lambda: samplers.annealed_langevin(
            key, score, ncsn, 4, steps_per_level=0)),
        ("step_size", lambda: samplers.annealed_langevin(key, score, ncsn, 4, step_size=0.0)),
    ]  # fmt: skip


def test_bad_input_names_the_argument(vp, ncsn, ddpm100, nine):
    for name, call in _bad_calls(vp, ncsn, ddpm100, nine):
        with pytest.raises(ValueError, match=rf"^{name}\b"):
            call()


def test_ddim_converges_to_the_probability_flow(nine, vp):
    """DDIM is a first-order solver of the VP probability-flow ODE: from the same y_T (both
    draw N(0, I) with the same key) its end points approach the ODE's as the steps grow."""
    key, n = jax.random.key(5), 64
    ode = samplers.probability_flow_ode(key, sde.exact_score(vp, nine), vp, n).samples
    schedule = schedules.ddpm_from_vp(vp, 1000)
    eps_fn = schedules.exact_eps(schedule, nine)
    errors = [
        float(jnp.mean(jnp.abs(samplers.ddim(key, eps_fn, schedule, n, k).samples - ode)))
        for k in (50, 200, 1000)
    ]
    assert errors[0] > errors[1] > errors[2], errors
    assert 3.0 < errors[1] / errors[2] < 7.5, errors  # first order: 5 for 5 times the steps
    assert errors[2] < 5e-3, errors


def test_ddim_on_given_timesteps_is_ddim_on_that_sub_schedule(nine, ddpm1000):
    """timesteps=tau runs DDIM on the steps tau: the same as DDIM over every step of the
    schedule cut down to tau (built here by indexing its arrays), whose own indices are then
    all of 0..S-1; and evenly spaced timesteps are what num_steps chooses."""
    key, n = jax.random.key(7), 256
    eps_fn = schedules.exact_eps(ddpm1000, nine)
    trailing = np.arange(999, 0, -100)  # 999, 899, ..., 99: never visits the last 99 steps
    up = trailing[::-1].copy()
    sub = ddpm1000._replace(**{f: getattr(ddpm1000, f)[up] for f in ddpm1000._fields})
    on_sub = samplers.ddim(key, lambda x, j: eps_fn(x, jnp.asarray(up)[j]), sub, n, len(up))
    given = samplers.ddim(key, eps_fn, ddpm1000, n, timesteps=trailing)
    assert given.nfe == len(trailing) == on_sub.nfe
    assert float(jnp.max(jnp.abs(given.samples - on_sub.samples))) < 1e-4
    even = np.round(np.linspace(999, 0, 12)).astype(int)
    assert jnp.array_equal(
        samplers.ddim(key, eps_fn, ddpm1000, n, timesteps=even).samples,
        samplers.ddim(key, eps_fn, ddpm1000, n, num_steps=12).samples,
    )


def test_ddim_timesteps_span_the_schedule_evenly():
    np.testing.assert_array_equal(samplers.ddim_timesteps(1000, 4), [999, 666, 333, 0])
    np.testing.assert_array_equal(samplers.ddim_timesteps(10, 10), np.arange(9, -1, -1))
    for bad, name in [((10, 11), "num_steps"), ((0, 1), "num_train_steps"), ((10, 0), "num_steps")]:
        with pytest.raises(ValueError, match=name):
            samplers.ddim_timesteps(*bad)
