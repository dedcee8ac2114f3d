"""The score network: its size, its noise embedding and its parameterisations."""

import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import networks as nw
from diffnb.sde import VPSDE


def _init(config, n=5):
    net = nw.score_network(config)
    x = jnp.zeros((n, config.output_dim))
    return net, net.init(jax.random.key(0), x, jnp.zeros(n))


def _mlp_size(d, hidden, e):
    """Scalars of Dirmeier's (2023) MLP, counted by hand from its layers."""
    size = (d * e + e) + (e * e + e)  # Linear on x; Linear on the embedding
    width = e
    for h in hidden:
        size += width * h + h
        width = h
    return size + 2 * width + (width * d + d)  # LayerNorm scale and offset; output Linear


def _shapes(config, n=5):
    """The parameter shapes, without running (or compiling) the initialiser."""
    net = nw.score_network(config)
    x = jnp.zeros((n, config.output_dim))
    return jax.eval_shape(net.init, jax.random.key(0), x, jnp.zeros(n))


def test_parameter_count_matches_the_case_study_sizes():
    assert nw.num_params(_shapes(nw.NetworkConfig())) == _mlp_size(2, (256, 256), 256) == 199_170
    config = nw.NetworkConfig(output_dim=3, hidden_dims=(64, 32), embedding_dim=16)
    assert nw.num_params(_shapes(config)) == _mlp_size(3, (64, 32), 16)


def test_output_shape_and_dependence_on_both_inputs():
    config = nw.NetworkConfig(output_dim=3, hidden_dims=(32,), embedding_dim=16)
    net, params = _init(config)
    x = jax.random.normal(jax.random.key(1), (7, 3))
    c = jnp.linspace(-4.0, 0.0, 7)
    out = net.apply(params, None, x, c)
    assert out.shape == (7, 3) and bool(jnp.all(jnp.isfinite(out)))
    assert not np.allclose(out, net.apply(params, None, x, c + 1.0), atol=1e-4)
    assert not np.allclose(out, net.apply(params, None, x + 1.0, c), atol=1e-4)


def _effective_rank(features, tol=1e-2):
    s = np.linalg.svd(features - features.mean(0), compute_uv=False)
    return int(np.sum(s > tol * s[0]))


def test_embedding_of_log_sigma_separates_levels_and_of_raw_sigma_does_not():
    # Raw sigma in [0.01, 1] barely turns even the fastest sinusoid (1 rad/unit).
    sigma = jnp.geomspace(1.0, 0.01, 100)  # Dirmeier's (2023) NCSN levels
    raw = np.asarray(nw.sinusoidal_embedding(sigma, 256))
    logged = np.asarray(nw.sinusoidal_embedding(jnp.log(sigma), 256))
    gap_raw = np.linalg.norm(np.diff(raw, axis=0), axis=1)
    gap_log = np.linalg.norm(np.diff(logged, axis=0), axis=1)
    # Geometric levels are equally spaced in log sigma, so every neighbour pair is equally far
    # apart; with raw sigma the small levels crowd together, 100 times closer.
    assert gap_log.min() > 0.99 * gap_log.max()
    assert gap_log.min() > 50 * gap_raw.min()
    assert _effective_rank(raw) < _effective_rank(logged)
    # Continuous time scaled to [0, 999] spreads over many frequencies.
    scaled_t = np.asarray(nw.sinusoidal_embedding(nw.TIME_SCALE * jnp.linspace(0, 1, 200), 256))
    assert _effective_rank(scaled_t) >= 50
    # sin and cos halves: every row has |emb|^2 = dim / 2.
    np.testing.assert_allclose(np.sum(logged**2, axis=1), 128.0, rtol=1e-5)


def test_score_parameterisations_rescale_the_network():
    config = nw.NetworkConfig(hidden_dims=(32,), embedding_dim=16)
    net, params = _init(config, n=4)
    x = jax.random.normal(jax.random.key(2), (4, 2))

    sigma = jnp.array([0.01, 0.1, 1.0, 3.0])
    got = nw.ncsn_score_model(net.apply)(params, None, x, sigma)
    want = net.apply(params, None, x, jnp.log(sigma)) / sigma[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    sde = VPSDE()
    t = jnp.array([1e-3, 0.1, 0.5, 1.0])
    std = np.sqrt(-np.expm1(-(0.1 * np.asarray(t) + 9.95 * np.asarray(t) ** 2)))
    got = nw.sde_score_model(net.apply, sde)(params, None, x, t)
    want = net.apply(params, None, x, 999.0 * t) / std[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    got = nw.sde_score_model(net.apply, sde, time_scale=50.0)(params, None, x, t)
    want = net.apply(params, None, x, 50.0 * t) / std[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)

    i = jnp.array([0, 9, 50, 99])
    got = nw.ddpm_eps_model(net.apply, 100)(params, None, x, i)
    want = net.apply(params, None, x, 999.0 * (np.asarray(i) + 1.0) / 100)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_linear_skip_starts_at_zero_and_lets_the_output_grow_with_x():
    config = nw.NetworkConfig(hidden_dims=(32,), embedding_dim=16)
    skip_config = nw.NetworkConfig(hidden_dims=(32,), embedding_dim=16, linear_skip=True)
    net, params = _init(config)
    skip_net, skip_params = _init(skip_config)
    assert nw.num_params(skip_params) == nw.num_params(params) + 2 * 2
    assert not np.any(skip_params["skip"]["w"])
    x, c = 100.0 * jax.random.normal(jax.random.key(5), (6, 2)), jnp.zeros(6)
    shared = {k: v for k, v in skip_params.items() if k != "skip"}
    np.testing.assert_allclose(
        skip_net.apply(skip_params, None, x, c), net.apply(shared, None, x, c), rtol=1e-6
    )
    # Without the skip the LayerNorm bounds the output, whatever |x|: |out| <= |W_o|_2 |LN(h)|
    # + |b_o|, with |LN(h)| <= sqrt(width) max|scale| + |offset|. With it, out ~ W_s x.
    norm, out = params["norm"], params["out"]
    hidden_bound = np.sqrt(32) * np.abs(norm["scale"]).max() + np.linalg.norm(norm["offset"])
    bound = np.linalg.norm(out["w"], 2) * hidden_bound + np.linalg.norm(out["b"])
    assert np.all(np.linalg.norm(net.apply(params, None, x, c), axis=1) <= bound * (1 + 1e-5))
    grown = {**skip_params, "skip": {"w": jnp.eye(2)}}
    np.testing.assert_allclose(skip_net.apply(grown, None, x, c), x, atol=bound * (1 + 1e-5))


def test_dropout_is_off_by_default_and_needs_a_key():
    x = jax.random.normal(jax.random.key(3), (6, 2))
    c = jnp.zeros(6)
    net, params = _init(nw.NetworkConfig(hidden_dims=(32,), embedding_dim=16))
    plain = net.apply(params, None, x, c)
    np.testing.assert_array_equal(plain, net.apply(params, jax.random.key(4), x, c))

    net, params = _init(nw.NetworkConfig(hidden_dims=(32,), embedding_dim=16, dropout_rate=0.5))
    plain = net.apply(params, None, x, c)
    assert not np.allclose(plain, net.apply(params, jax.random.key(4), x, c))


def test_network_under_transform_and_run():
    @hk.testing.transform_and_run
    def run():
        config = nw.NetworkConfig(hidden_dims=(8, 8), embedding_dim=8)
        return nw._mlp(config, jnp.ones((3, 2)), jnp.zeros(3))

    assert run().shape == (3, 2)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"embedding_dim": 15}, "embedding_dim"),
        ({"embedding_dim": 2}, "embedding_dim"),
        ({"hidden_dims": (32, 0)}, "hidden_dims"),
        ({"output_dim": 0}, "output_dim"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"max_positions": math.inf}, "max_positions"),
    ],
)
def test_bad_config_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        nw.NetworkConfig(**kwargs)


@pytest.mark.parametrize("time_scale", [0.0, -1.0, math.nan])
def test_bad_time_scale_is_named(time_scale):
    net, _ = _init(nw.NetworkConfig(hidden_dims=(8,), embedding_dim=8))
    with pytest.raises(ValueError, match="time_scale"):
        nw.sde_score_model(net.apply, VPSDE(), time_scale=time_scale)


def test_bad_shapes_name_the_argument():
    net, params = _init(nw.NetworkConfig(hidden_dims=(8,), embedding_dim=8))
    with pytest.raises(ValueError, match="x must"):
        net.apply(params, None, jnp.zeros((4, 3)), jnp.zeros(4))
    with pytest.raises(ValueError, match="c must"):
        net.apply(params, None, jnp.zeros((4, 2)), jnp.zeros(3))
    with pytest.raises(ValueError, match="num_steps"):
        nw.ddpm_eps_model(net.apply, 0)
