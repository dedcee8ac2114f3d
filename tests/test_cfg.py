"""The class-conditional network and the classifier-free-guidance loss."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffnb import conditional, data, losses, networks
from diffnb.sde import VPSDE

SDE = VPSDE()
CONFIG = networks.NetworkConfig(hidden_dims=(64, 64), embedding_dim=32, num_classes=9)


def _init():
    net = networks.score_network(CONFIG)
    x, t, k = jnp.zeros((4, 2)), jnp.full((4,), 0.5), jnp.array([0, 3, 8, 9])
    params = net.init(jax.random.PRNGKey(0), x, t, k)
    return net, params, x, t, k


def test_labelled_network_shapes_and_null_label():
    net, params, x, t, k = _init()
    assert params["label"]["embeddings"].shape == (10, 32)  # 9 classes + the null label
    model = networks.with_labels(networks.sde_score_model, net.apply, SDE)
    out = model(params, None, x, t, k)
    assert out.shape == (4, 2) and bool(jnp.all(jnp.isfinite(out)))
    # the label changes the output: class 0 and the null label differ
    a = model(params, None, x[:1], t[:1], jnp.array([0]))
    b = model(params, None, x[:1], t[:1], jnp.array([9]))
    assert not np.allclose(a, b)
    with pytest.raises(ValueError, match="k must be integer labels"):
        net.apply(params, None, x, t, jnp.zeros(4))


def test_default_network_is_unchanged():
    net = networks.score_network(networks.NetworkConfig(hidden_dims=(8,), embedding_dim=8))
    params = net.init(jax.random.PRNGKey(0), jnp.zeros((2, 2)), jnp.zeros(2))
    assert "label" not in params
    with pytest.raises(ValueError, match="num_classes"):
        networks.NetworkConfig(num_classes=0)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
def test_label_dropout_rate_is_honoured(p):
    k = jnp.zeros(20000, jnp.int32) + 3
    out = losses.drop_labels(jax.random.PRNGKey(1), k, 9, p)
    rate = float(jnp.mean(out == 9))
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / 20000) + 1e-9
    assert bool(jnp.all((out == 3) | (out == 9)))


def test_cfg_loss_rejects_bad_arguments():
    net, *_ = _init()
    apply = networks.with_labels(networks.sde_score_model, net.apply, SDE)
    with pytest.raises(ValueError, match="drop_prob"):
        losses.cfg_dsm_loss(apply, SDE, 9, drop_prob=1.5)
    with pytest.raises(ValueError, match="num_classes"):
        losses.cfg_dsm_loss(apply, SDE, 0)
    with pytest.raises(ValueError, match="weighting"):
        losses.cfg_dsm_loss(apply, SDE, 9, weighting="x")


def test_short_cfg_training_lowers_the_loss():
    net, params, *_ = _init()
    apply = networks.with_labels(networks.sde_score_model, net.apply, SDE, time_scale=50.0)
    loss_fn = losses.cfg_dsm_loss(apply, SDE, 9, drop_prob=0.2)
    x, k = conditional.sample_with_labels(jax.random.PRNGKey(2), data.nine_gaussians(), 4096)
    batch = {"x": x, "k": k}
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(params, state, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, key, batch)
        updates, state = opt.update(grads, state)
        return optax.apply_updates(params, updates), state, loss

    eval_key = jax.random.PRNGKey(5)
    before = float(
        jnp.mean(
            jnp.stack([loss_fn(params, jax.random.fold_in(eval_key, i), batch) for i in range(4)])
        )
    )
    for i in range(300):
        params, state, _ = step(params, state, jax.random.PRNGKey(100 + i))
    after = float(
        jnp.mean(
            jnp.stack([loss_fn(params, jax.random.fold_in(eval_key, i), batch) for i in range(4)])
        )
    )
    assert after < 0.8 * before, (before, after)
    assert isinstance(params, dict) and hk.data_structures.tree_size(params) > 0


def test_train_cfg_gives_the_labelled_and_the_null_scores(nine):
    from diffnb import cfg

    model = cfg.train_cfg(jax.random.key(3), nine, 0.3, num_points=2000, num_steps=300)
    assert model.losses.shape == (300,)
    assert float(model.losses[-50:].mean()) < float(model.losses[:50].mean())
    x, t = jax.random.normal(jax.random.key(4), (6, 2)), jnp.full(6, 0.4)
    null = model.apply(model.params, None, x, t, jnp.full(6, 9, jnp.int32))
    np.testing.assert_array_equal(model.unconditional(x, t), null)
    labels = model.apply(model.params, None, x, t, jnp.full(6, 2, jnp.int32))
    np.testing.assert_array_equal(model.conditional(x, t, 2), labels)
    assert not np.allclose(labels, null)
    for p_drop in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="p_drop"):
            cfg.train_cfg(jax.random.key(3), nine, p_drop)
    with pytest.raises(ValueError, match="num_points"):
        cfg.train_cfg(jax.random.key(3), nine, num_points=0)
