"""The digits' convolutional network: shapes, the labels and the null label, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import convnet

SMALL = convnet.ConvNetConfig(channels=(8, 16), embedding_dim=16, num_groups=4)


def _init(config=SMALL, n=6):
    net = convnet.conv_network(config)
    x = jnp.zeros((n, 64))
    args = (x, jnp.zeros(n)) if config.num_classes is None else (x, jnp.zeros(n), jnp.zeros(n, int))
    params = net.init(jax.random.key(0), *args)
    # The last convolution starts at zero; give it weights so that outputs differ.
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    leaves = [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    return net, jax.tree_util.tree_unflatten(tree, leaves)


def _inputs(n=6):
    x = jax.random.uniform(jax.random.key(2), (n, 64), minval=-1.0, maxval=1.0)
    return x, jnp.linspace(-2.0, 1.0, n), jnp.arange(n) % 10


def test_untrained_output_is_zero_and_of_the_image_shape():
    net = convnet.conv_network(SMALL)
    x, c, k = _inputs()
    params = net.init(jax.random.key(0), x, c, k)
    out = net.apply(params, None, x, c, k)
    assert out.shape == (6, 64) and float(jnp.max(jnp.abs(out))) == 0.0


def test_output_depends_on_image_noise_level_and_label():
    net, params = _init()
    x, c, k = _inputs()
    out = net.apply(params, None, x, c, k)
    assert out.shape == (6, 64) and bool(jnp.all(jnp.isfinite(out)))
    assert not np.allclose(out, net.apply(params, None, x + 0.5, c, k), atol=1e-4)
    assert not np.allclose(out, net.apply(params, None, x, c + 1.0, k), atol=1e-4)
    assert not np.allclose(out, net.apply(params, None, x, c, (k + 1) % 10), atol=1e-4)


def test_null_label_is_accepted_and_is_its_own_class():
    net, params = _init()
    x, c, k = _inputs()
    null = jnp.full_like(k, 10)
    out_null = net.apply(params, None, x, c, null)
    assert out_null.shape == (6, 64)
    for label in range(10):
        other = net.apply(params, None, x, c, jnp.full_like(k, label))
        assert float(jnp.max(jnp.abs(other - out_null))) > 1e-3


def test_images_are_processed_independently_of_the_batch():
    # GroupNorm normalises each image on its own: no batch statistics leak between rows.
    net, params = _init()
    x, c, k = _inputs()
    out = net.apply(params, None, x, c, k)
    x2 = x.at[1:].set(-x[1:])
    out2 = net.apply(params, None, x2, c, k)
    np.testing.assert_allclose(out2[0], out[0], atol=1e-5)
    single = net.apply(params, None, x[:1], c[:1], k[:1])
    np.testing.assert_allclose(single[0], out[0], atol=1e-5)


def test_same_under_jit():
    net, params = _init()
    x, c, k = _inputs()
    jitted = jax.jit(net.apply)(params, None, x, c, k)
    np.testing.assert_allclose(jitted, net.apply(params, None, x, c, k), atol=1e-5)


def test_unconditional_network_takes_no_label():
    config = convnet.ConvNetConfig(channels=(8, 16), embedding_dim=16, num_groups=4,
                                   num_classes=None)  # fmt: skip
    net, params = _init(config)
    x, c, _ = _inputs()
    assert net.apply(params, None, x, c).shape == (6, 64)
    assert not any("label" in m for m in params)


@pytest.mark.parametrize("shape", [(6, 63), (6, 8, 8), (64,), (6, 65)])
def test_wrong_image_shape_raises(shape):
    net, params = _init()
    n = shape[0] if len(shape) > 1 else 1
    with pytest.raises(ValueError, match="x must have shape"):
        net.apply(params, None, jnp.zeros(shape), jnp.zeros(n), jnp.zeros(n, int))


@pytest.mark.parametrize("label", [-1, 11, 12])
def test_label_outside_classes_and_null_raises(label):
    net, params = _init()
    x, c, k = _inputs()
    with pytest.raises(ValueError, match="k must be classes 0..9 or the null label 10"):
        net.apply(params, None, x, c, k.at[2].set(label))


def test_bad_label_type_or_shape_and_bad_c_raise():
    net, params = _init()
    x, c, k = _inputs()
    with pytest.raises(ValueError, match="k must be integer labels"):
        net.apply(params, None, x, c, k.astype(jnp.float32))
    with pytest.raises(ValueError, match="k must be integer labels"):
        net.apply(params, None, x, c, k[:3])
    with pytest.raises(ValueError, match="c must have shape"):
        net.apply(params, None, x, c[:3], k)


@pytest.mark.parametrize(
    "kwargs",
    [{"channels": (8,)}, {"channels": (8, 0)}, {"num_groups": 3}, {"embedding_dim": 5},
     {"embedding_dim": 2}, {"num_blocks": 0}, {"num_classes": 0}, {"max_positions": 1.0}],
    ids=lambda kwargs: "-".join(f"{k}={v}" for k, v in kwargs.items()),
)  # fmt: skip
def test_bad_config_raises(kwargs):
    """Each bad size is refused with a message that starts with its own name (so that an
    error raised for another argument, or a failure later on, does not pass)."""
    (name,) = kwargs
    with pytest.raises(ValueError, match=rf"^{name} must be "):
        convnet.ConvNetConfig(**{"channels": (8, 16), "num_groups": 4, **kwargs})


@pytest.mark.parametrize("stride", [1, 2])
def test_patch_convolution_equals_xla_convolution(stride):
    # The patch-matrix 3x3 convolution against XLA's own convolution with the same weights.
    import haiku as hk

    conv = hk.transform(lambda h: convnet._conv3x3(h, 5, "c", stride=stride))
    h = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    p = conv.init(jax.random.key(1), h)
    w = p["c"]["w"].reshape(3, 3, 3, 5)  # (row, column, in, out)
    expected = jax.lax.conv_general_dilated(
        h, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    expected = expected + p["c"]["b"][None, None, None]
    np.testing.assert_allclose(conv.apply(p, None, h), expected, atol=1e-5)
