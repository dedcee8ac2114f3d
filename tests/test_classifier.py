"""The noise-conditional classifier, its loss, its gradient, and reconstruction guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffnb import conditional, data, losses, networks
from diffnb.sde import VPSDE, exact_score

SDE = VPSDE()
CONFIG = networks.NetworkConfig(hidden_dims=(64, 64), embedding_dim=32, linear_skip=False)


def _classifier():
    net = networks.classifier_network(CONFIG, 9)
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((4, 2)), jnp.zeros(4))
    apply = networks.sde_classifier_model(net.apply, SDE, time_scale=50.0)
    return net, params, apply


def _exact_apply(mixture):
    """The exact classifier log p_t(k | x) of ``mixture`` as a model function."""
    exact = conditional.classifier_log_prob(SDE, mixture)
    return lambda params, rng, x, t: exact(x, t)


def _labelled(mixture, n=4096, seed=2):
    return conditional.sample_with_labels(jax.random.PRNGKey(seed), mixture, n)


def test_classifier_outputs_normalised_log_probabilities():
    _, params, apply = _classifier()
    x, t = jax.random.normal(jax.random.PRNGKey(1), (5, 2)), jnp.linspace(0.1, 1.0, 5)
    log_p = apply(params, None, x, t)
    assert log_p.shape == (5, 9)
    np.testing.assert_allclose(np.exp(np.asarray(log_p)).sum(axis=1), 1.0, atol=1e-5)


def test_exact_classifier_has_lower_loss_than_a_random_net(nine):
    _, params, apply = _classifier()
    batch = _labelled(nine)
    key = jax.random.PRNGKey(3)
    exact = float(losses.classifier_loss(_exact_apply(nine), SDE)(None, key, batch))
    random = float(losses.classifier_loss(apply, SDE)(params, key, batch))
    # the random net is near log 9 = 2.20; the exact loss is E_t H(k | x_t) < log 9
    assert exact < random - 0.3 and exact < np.log(9) - 0.3


def test_short_training_lowers_the_loss_and_the_gradient_error(nine):
    _, params, apply = _classifier()
    loss_fn = losses.classifier_loss(apply, SDE)
    x, k = _labelled(nine, 8192)
    opt = optax.adam(2e-3)

    @jax.jit
    def run(params, key):
        def step(carry, key_s):
            p, s = carry
            rows = jax.random.randint(jax.random.fold_in(key_s, 1), (256,), 0, x.shape[0])
            loss, grads = jax.value_and_grad(loss_fn)(p, key_s, (x[rows], k[rows]))
            updates, s = opt.update(grads, s)
            return (optax.apply_updates(p, updates), s), loss

        (p, _), curve = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(key, 600))
        return p, curve

    trained, _ = run(params, jax.random.PRNGKey(4))
    key_eval, batch = jax.random.PRNGKey(8), _labelled(nine, 8192, seed=9)
    before, after = (float(loss_fn(p, key_eval, batch)) for p in (params, trained))
    exact = float(losses.classifier_loss(_exact_apply(nine), SDE)(None, key_eval, batch))
    # at least half the gap to the exact classifier's loss closed
    assert after - exact < 0.5 * (before - exact), (before, after, exact)

    x_eval, k_eval = _labelled(nine, 2000, seed=5)
    truth = conditional.classifier_grad(SDE, nine)

    def rel_error(p, t):
        grad = conditional.learned_classifier_grad(apply, p, 9)
        g, g0 = grad(x_eval, t, k_eval), truth(x_eval, t, k_eval)
        return float(jnp.linalg.norm(g - g0) / jnp.linalg.norm(g0))

    for t in (0.3, 0.6):
        before, after = rel_error(params, t), rel_error(trained, t)
        assert after < 0.7 * before, (t, before, after)


def test_learned_gradient_of_the_exact_log_probs_is_the_exact_gradient(nine):
    # the helper differentiates whatever log-probabilities it is given: with the exact ones
    # it must return Bayes' gradient grad log p_t(x | k) - grad log p_t(x)
    x, k = _labelled(nine, 500, seed=6)
    t = jnp.full((500,), 0.4)
    grad = conditional.learned_classifier_grad(_exact_apply(nine), None, 9)(x, t, k)
    truth = conditional.classifier_grad(SDE, nine)(x, t, k)
    np.testing.assert_allclose(np.asarray(grad), np.asarray(truth), atol=2e-3, rtol=1e-3)


def test_bad_inputs_raise(nine):
    _, params, apply = _classifier()
    loss_fn = losses.classifier_loss(apply, SDE)
    x, k = _labelled(nine, 64)
    with pytest.raises(ValueError, match="labels k must have shape"):
        loss_fn(params, jax.random.PRNGKey(0), (x, k[:10]))
    with pytest.raises(ValueError, match="integers"):
        loss_fn(params, jax.random.PRNGKey(0), (x, k.astype(jnp.float32)))
    with pytest.raises(ValueError, match="pair"):
        loss_fn(params, jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="eps"):
        losses.classifier_loss(apply, SDE, eps=2.0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        networks.classifier_network(CONFIG, 1)
    with pytest.raises(ValueError, match="config.num_classes"):
        networks.classifier_network(networks.NetworkConfig(num_classes=9), 9)
    grad = conditional.learned_classifier_grad(apply, params, 9)
    with pytest.raises(ValueError, match="k must lie in"):
        grad(x, jnp.full((64,), 0.5), 9)


# ---------------------------------------------------------------------------------------------
# Reconstruction guidance.

MU, TAU = np.array([1.0, -0.5]), 0.7
GAUSSIAN = data.gaussian_mixture(MU[None], np.full(1, TAU**2), np.ones(1))


def _closed_form(x, t, a):
    """Score of p_t(x_t | x_0A = a) for data N(mu, tau^2 I), A = {0}: coordinate 0 is the
    kernel N(m a, s^2), coordinate 1 the noised marginal N(m mu_1, m^2 tau^2 + s^2)."""
    m, s = SDE.marginal(t)
    s0 = -(x[:, 0] - m * a) / s**2
    s1 = -(x[:, 1] - m * MU[1]) / (m**2 * TAU**2 + s**2)
    return jnp.stack([s0, s1], axis=1)


@pytest.mark.parametrize("t", [0.05, 0.3, 0.9])
def test_reconstruction_guidance_is_exact_for_one_isotropic_gaussian(t):
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(7), (200, 2))
    tt = jnp.full((200,), t)
    a = 0.3
    guided = conditional.reconstruction_guidance(exact_score(SDE, GAUSSIAN), SDE, [0], [a], TAU, 2)
    truth = _closed_form(x, tt, a)
    err = float(jnp.max(jnp.abs(guided(x, tt) - truth)) / jnp.max(jnp.abs(truth)))
    assert err < 1e-4, err
    if t > 0.5:  # late in the reverse process the observation term is small at any tau
        return
    # with the variance rule at another tau, the guided score is not the conditional one
    wrong = conditional.reconstruction_guidance(
        exact_score(SDE, GAUSSIAN), SDE, [0], [a], 3.0 * TAU, 2
    )
    assert float(jnp.max(jnp.abs(wrong(x, tt) - truth)) / jnp.max(jnp.abs(truth))) > 1e-2


def test_reconstruction_guidance_sweep_compiles_once_with_each_value_and_tau():
    """value and tau are leaves: one compilation serves the whole sweep, and each call uses
    its own (a, tau), not the first one's baked in as constants. At tau = TAU the guided score
    is the closed form; at other tau it is the eager (un-jitted) guided score."""
    score = exact_score(SDE, GAUSSIAN)
    traces = []

    @jax.jit
    def at(guide, x, t):
        traces.append(1)
        return guide(x, t)

    x = 2.0 * jax.random.normal(jax.random.PRNGKey(11), (50, 2))
    t = jnp.full((50,), 0.3)
    outputs = []
    for a, tau in ((0.0, TAU), (1.0, TAU), (3.0, TAU), (1.0, 3.0 * TAU), (1.0, 0.25 * TAU)):
        guide = conditional.reconstruction_guidance(score, SDE, [0], [a], tau, 2)
        out = at(guide, x, t)
        np.testing.assert_allclose(out, guide(x, t), rtol=1e-5, atol=1e-5)
        if tau == TAU:
            truth = _closed_form(x, t, a)
            err = float(jnp.max(jnp.abs(out - truth)) / jnp.max(jnp.abs(truth)))
            assert err < 1e-4, (a, tau, err)
        outputs.append(np.asarray(out))
    assert len(traces) == 1
    for i, a in enumerate(outputs):  # every (a, tau) gives its own field
        for b in outputs[i + 1 :]:
            assert float(np.max(np.abs(a - b))) > 1e-2


@pytest.mark.parametrize(
    "observed, value, tau, match",
    [([0], [0.0], 0.0, "^tau must be positive"), ([0], [0.0], np.nan, "^tau must be finite"),
     ([2], [0.0], 1.0, "^observed indices"), ([0], [np.inf], 1.0, "^value must be finite")],
    ids=["tau-zero", "tau-nan", "observed-out-of-range", "value-inf"],
)  # fmt: skip
def test_reconstruction_guidance_names_the_bad_argument(nine, observed, value, tau, match):
    score = exact_score(SDE, nine)
    with pytest.raises(ValueError, match=match):
        conditional.reconstruction_guidance(score, SDE, observed, value, tau, 2)
