"""Labels and conditioning: the exact classifier against brute force, Bayes for scores,
the conditional law against numerical conditioning of the joint, and guided scores."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from diffnb import conditional, data, samplers
from diffnb.sde import VESDE, VPSDE, exact_score

MIX = data.nine_gaussians()
SDE = VPSDE()
TIMES = (0.01, 0.1, 0.3, 0.7, 1.0)


def _points(n=64, seed=0):
    return 2.5 * jax.random.normal(jax.random.PRNGKey(seed), (n, 2))


def test_sample_with_labels_matches_data_sample_and_labels_fit():
    key = jax.random.PRNGKey(3)
    x, k = conditional.sample_with_labels(key, MIX, 4000)
    np.testing.assert_array_equal(x, data.sample(key, MIX, 4000))
    assert k.shape == (4000,) and k.dtype == jnp.int32
    # every point lies within 6 std (0.25) of its own component's mean
    assert float(jnp.max(jnp.linalg.norm(x - MIX.means[k], axis=1))) < 1.5
    freq = np.bincount(np.asarray(k), minlength=9) / 4000
    np.testing.assert_allclose(freq, MIX.weights, atol=0.03)


@pytest.mark.parametrize("t", TIMES)
def test_classifier_matches_brute_force(t):
    x = _points()
    m, s = (float(v) for v in SDE.marginal(jnp.asarray(t)))
    weights, means, covs = (np.asarray(a, np.float64) for a in MIX)
    log_joint = np.stack(
        [
            np.log(w) + stats.multivariate_normal(m * mu, m**2 * c + s**2 * np.eye(2)).logpdf(x)
            for w, mu, c in zip(weights, means, covs, strict=True)
        ],
        axis=1,
    )
    expected = log_joint - special.logsumexp(log_joint, axis=1, keepdims=True)
    got = conditional.classifier_log_prob(SDE, MIX)(x, t)
    mask = expected > -30  # compare log-probabilities where float32 resolves them
    np.testing.assert_allclose(np.asarray(got)[mask], expected[mask], atol=2e-3)
    np.testing.assert_allclose(np.exp(got).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("sde", [VPSDE(), VESDE()], ids=["vp", "ve"])
@pytest.mark.parametrize("t", TIMES)
def test_bayes_for_scores(sde, t):
    """grad log p_t(x | k) = grad log p_t(x) + grad log p_t(k | x), the last by autodiff."""
    x = _points(16)
    log_cls = conditional.classifier_log_prob(sde, MIX)
    cond = conditional.class_conditional_score(sde, MIX)
    marginal = exact_score(sde, MIX)
    for k in (0, 4, 8):
        grad_cls = jax.vmap(jax.grad(lambda p, k=k: log_cls(p[None], t)[0, k]))(x)
        lhs = cond(x, t, k)
        rhs = marginal(x, t) + grad_cls
        scale = 1.0 + float(jnp.max(jnp.abs(lhs)))
        assert float(jnp.max(jnp.abs(lhs - rhs))) / scale < 1e-4
        np.testing.assert_allclose(
            conditional.classifier_grad(sde, MIX)(x, t, k), grad_cls, atol=1e-3 * scale
        )


def test_class_conditional_score_is_one_noised_gaussian():
    x, t = _points(8), 0.4
    m, s = SDE.marginal(jnp.asarray(t))
    k = jnp.arange(8) % 9
    cov = m**2 * MIX.covs[k] + s**2 * jnp.eye(2)[None]
    expected = -jnp.linalg.solve(cov, (x - m * MIX.means[k])[..., None])[..., 0]
    np.testing.assert_allclose(
        conditional.class_conditional_score(SDE, MIX)(x, t, k), expected, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("observed, a", [(0, 0.0), (0, 1.0), (1, -2.0), (1, 3.0)])
def test_conditional_law_matches_numerical_conditioning(observed, a):
    # a correlated mixture, so the conditional means and covariances move with a
    mix = data.gaussian_mixture(
        [[-1.0, 0.5], [1.5, -1.0], [0.0, 2.0]],
        [[[1.0, 0.6], [0.6, 0.8]], [[0.5, -0.3], [-0.3, 1.2]], [[0.3, 0.0], [0.0, 0.2]]],
        [0.5, 0.3, 0.2],
    )
    cond, free = conditional.conditional_mixture(mix, [observed], [a])
    assert free.tolist() == [1 - observed]
    grid = np.linspace(-8, 8, 4001)
    pts = np.zeros((grid.size, 2))
    pts[:, observed], pts[:, 1 - observed] = a, grid
    joint = np.exp(np.asarray(data.log_prob(mix, jnp.asarray(pts, jnp.float32)), np.float64))
    numerical = joint / np.trapezoid(joint, grid)
    exact = np.exp(np.asarray(data.log_prob(cond, jnp.asarray(grid[:, None], jnp.float32))))
    np.testing.assert_allclose(exact, numerical, atol=2e-5 * numerical.max() + 1e-7)
    # its noised score is the exact score of that mixture
    score = conditional.conditional_score(SDE, mix, [observed], [a])
    y = jnp.asarray(grid[::400, None], jnp.float32)
    np.testing.assert_allclose(score(y, 0.3), exact_score(SDE, cond)(y, 0.3))


def test_conditional_mixture_rejects_bad_observations():
    with pytest.raises(ValueError, match="observed indices"):
        conditional.conditional_mixture(MIX, [2], [0.0])
    with pytest.raises(ValueError, match="distinct"):
        conditional.conditional_mixture(
            data.gaussian_mixture(np.zeros((1, 3)), 1.0, [1.0]), [0, 0], [0.0, 0.0]
        )
    with pytest.raises(ValueError, match="free"):
        conditional.conditional_mixture(MIX, [0, 1], [0.0, 0.0])
    with pytest.raises(ValueError, match="value"):
        conditional.conditional_mixture(MIX, [0], [0.0, 1.0])
    with pytest.raises(ValueError, match="value"):
        conditional.conditional_mixture(MIX, [0], [np.nan])


def test_labels_out_of_range_raise():
    fn = conditional.class_conditional_score(SDE, MIX)
    with pytest.raises(ValueError, match="k must lie"):
        fn(_points(4), 0.5, 9)
    with pytest.raises(ValueError, match="k must be an integer"):
        fn(_points(4), 0.5, 1.0)


# ---------------------------------------------------------------------------------------------
# Guided scores.


@pytest.mark.parametrize("t", TIMES)
def test_classifier_guidance_at_one_is_class_conditional(t):
    x = _points(32)
    grad = conditional.classifier_grad(SDE, MIX)
    cond = conditional.class_conditional_score(SDE, MIX)
    for k in (0, 4, 8):
        g = conditional.classifier_guidance(exact_score(SDE, MIX), grad, k, 1.0, num_classes=9)
        np.testing.assert_allclose(g(x, t), cond(x, t, k), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("w", [0.0, 0.5, 2.0, 4.0])
def test_cfg_with_exact_scores_is_classifier_guidance_with_one_plus_w(w):
    x, t = _points(32), 0.3
    score = exact_score(SDE, MIX)
    cond = conditional.class_conditional_score(SDE, MIX)
    grad = conditional.classifier_grad(SDE, MIX)
    cfg = conditional.classifier_free_guidance(cond, score, 2, w, num_classes=9)
    cg = conditional.classifier_guidance(score, grad, 2, 1.0 + w, num_classes=9)
    a, b = cfg(x, t), cg(x, t)
    np.testing.assert_allclose(a, b, atol=1e-3 * (1.0 + float(jnp.max(jnp.abs(b)))))


def test_guidance_rejects_bad_arguments():
    score, grad = exact_score(SDE, MIX), conditional.classifier_grad(SDE, MIX)
    cond = conditional.class_conditional_score(SDE, MIX)
    with pytest.raises(ValueError, match="label must lie"):
        conditional.classifier_guidance(score, grad, 9, 1.0, num_classes=9)
    with pytest.raises(ValueError, match="label must lie"):
        conditional.classifier_free_guidance(cond, score, -1, 1.0, num_classes=9)
    with pytest.raises(ValueError, match="label must be a scalar integer"):
        conditional.classifier_guidance(score, grad, 1.5, 1.0)
    with pytest.raises(ValueError, match="scale must be finite"):
        conditional.classifier_guidance(score, grad, 0, np.inf)
    with pytest.raises(ValueError, match="weight must be finite"):
        conditional.classifier_free_guidance(cond, score, 0, np.nan)


def test_guidance_sweep_compiles_once():
    """Labels and weights are pytree leaves: one outer jit traces the sampler once."""
    traces = []
    base = exact_score(SDE, MIX)

    def score(x, t):
        traces.append(1)  # runs only while tracing
        return base(x, t)

    cond = conditional.class_conditional_score(SDE, MIX)
    run = jax.jit(lambda key, g: samplers.euler_maruyama(key, g, SDE, 64, num_steps=20).samples)
    key = jax.random.PRNGKey(0)
    outs = []
    for k in (0, 4, 8):
        for w in (0.0, 1.0, 4.0):
            g = conditional.classifier_free_guidance(cond, score, k, w, num_classes=9)
            outs.append(run(key, g))
    assert len(traces) == 1
    # and the values did change with the label: means near each class's mean
    for out, k in zip(outs[::3], (0, 4, 8), strict=True):
        assert float(jnp.linalg.norm(out.mean(axis=0) - MIX.means[k])) < 0.2


# ---------------------------------------------------------------------------------------------
# Imputation by replacement.


@pytest.mark.parametrize("which", ["em", "pc"])
def test_imputation_hook_fixes_the_observed_coordinate(which):
    hook = conditional.imputation(SDE, [0], [2.0], dim=2)
    key, score = jax.random.PRNGKey(1), exact_score(SDE, MIX)
    if which == "em":
        out = samplers.euler_maruyama(key, score, SDE, 500, num_steps=100, hook=hook).samples
    else:
        out = samplers.predictor_corrector(key, score, SDE, 500, num_steps=100, hook=hook).samples
    _, s_eps = SDE.marginal(jnp.asarray(1e-3))
    assert float(jnp.max(jnp.abs(out[:, 0] - 2.0))) < 6 * float(s_eps) + 1e-3
    # the free coordinate lands on the modes {-2, 0, 2} of the slice x_1 = 2
    dist = jnp.min(jnp.abs(out[:, 1:2] - jnp.array([[-2.0, 0.0, 2.0]])), axis=1)
    assert float(jnp.mean(dist < 0.75)) > 0.95


def test_imputation_without_hook_is_unchanged_and_hook_is_used():
    key, score = jax.random.PRNGKey(2), exact_score(SDE, MIX)
    plain = samplers.euler_maruyama(key, score, SDE, 64, num_steps=20).samples
    again = samplers.euler_maruyama(key, score, SDE, 64, num_steps=20, hook=None).samples
    np.testing.assert_array_equal(plain, again)
    hooked = samplers.euler_maruyama(
        key, score, SDE, 64, num_steps=20, hook=conditional.imputation(SDE, [1], [0.0], 2)
    ).samples
    assert not np.allclose(hooked, plain)


def test_imputation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="observed indices"):
        conditional.imputation(SDE, [2], [0.0], dim=2)
    with pytest.raises(ValueError, match="observed indices"):
        conditional.imputation(SDE, [-1], [0.0], dim=2)
    with pytest.raises(ValueError, match="value"):
        conditional.imputation(SDE, [0], [0.0, 1.0], dim=2)
    with pytest.raises(ValueError, match="value must be finite"):
        conditional.imputation(SDE, [0], [np.inf], dim=2)
    with pytest.raises(ValueError, match="sde"):
        conditional.imputation("vp", [0], [0.0], dim=2)
    # built for 3-D points, used on 2-D ones: the index is out of range at trace time
    hook = conditional.imputation(SDE, [2], [0.0], dim=3)
    with pytest.raises(ValueError, match="observed indices"):
        samplers.euler_maruyama(jax.random.PRNGKey(0), exact_score(SDE, MIX), SDE, 8, hook=hook)
    with pytest.raises(ValueError, match="hook must be callable"):
        samplers.euler_maruyama(jax.random.PRNGKey(0), exact_score(SDE, MIX), SDE, 8, hook=3)
