"""The training loop: it learns, it is reproducible, it shuffles, it stops on NaN, it checks input.

Most checks use toy losses whose trajectory is known by hand: with SGD at learning rate -1
the parameters add up the gradients, so a loss whose gradient counts the points in the batch
turns the parameters into visit counts.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diffnb import data, losses, networks, schedules, training

SGD_UP = optax.sgd(-1.0)  # params <- params + grad


def _counting_loss(params, key, batch):
    """Gradient = how often each point (its value is its index) is in the batch."""
    del key
    counts = jnp.sum(jax.nn.one_hot(batch[:, 0].astype(jnp.int32), params.shape[0]), axis=0)
    return jnp.sum(params * counts)


def _train(loss_fn, params, data, **kwargs):
    kwargs = {"optimizer": SGD_UP, "progress": False, **kwargs}
    return training.train(jax.random.key(0), loss_fn, params, data, **kwargs)


@pytest.mark.parametrize(("n", "batch_size", "epochs"), [(12, 4, 5), (10, 3, 12)])
def test_every_epoch_is_a_fresh_permutation(n, batch_size, epochs):
    points = jnp.arange(n, dtype=jnp.float32)[:, None]
    per_epoch = n // batch_size
    result = _train(
        _counting_loss, jnp.zeros(n), points, num_steps=per_epoch * epochs,
        batch_size=batch_size, steps_per_chunk=7,
    )  # fmt: skip
    counts = np.asarray(result.params)
    # Each loss is the sum of the counts so far over the batch, so it depends on every batch
    # before it: equal losses mean equal batches, however the steps are chunked.
    rechunked = _train(
        _counting_loss, jnp.zeros(n), points, num_steps=per_epoch * epochs,
        batch_size=batch_size, steps_per_chunk=100,
    )  # fmt: skip
    np.testing.assert_array_equal(result.losses, rechunked.losses)
    assert counts.sum() == per_epoch * epochs * batch_size
    assert counts.max() <= epochs  # no point twice in one epoch
    if n % batch_size == 0:
        np.testing.assert_array_equal(counts, epochs)
    else:  # the left-over points differ between epochs: nobody is always left out
        assert counts.min() >= epochs // 2


def test_nan_loss_stops_at_its_step_and_keeps_the_finite_parameters():
    def loss_fn(w, key, batch):  # w grows by 1 per step; the loss is NaN from w = 5 on
        return jnp.where(w >= 5.0, jnp.nan, w)

    points = jnp.zeros((8, 2))
    for chunk in (3, 5, 100):  # the bad step mid-chunk, first in a chunk, in the only chunk
        with pytest.raises(training.NonFiniteLossError, match="step 5") as info:
            _train(loss_fn, jnp.asarray(0.0), points, num_steps=20, batch_size=2,
                   steps_per_chunk=chunk, ema_decay=0.5)  # fmt: skip
        err = info.value
        assert err.step == 5
        assert float(err.last_finite_params) == 4.0  # step 4's loss (4.0) was the last finite
        np.testing.assert_array_equal(err.losses, [0.0, 1.0, 2.0, 3.0, 4.0])
        assert np.isfinite(float(err.last_finite_ema_params))


def test_nan_gradient_with_a_finite_loss_also_stops():
    def loss_fn(w, key, batch):  # finite value, infinite slope of sqrt|w - 5| at w = 5
        return w + 0.0 * jnp.sqrt(jnp.abs(w - 5.0))

    with pytest.raises(training.NonFiniteLossError, match="step 5") as info:
        _train(loss_fn, jnp.asarray(0.0), jnp.zeros((8, 2)), num_steps=10, batch_size=2)
    assert float(info.value.last_finite_params) == 4.0


def test_a_nan_at_the_first_step_has_no_finite_parameters():
    with pytest.raises(training.NonFiniteLossError, match="step 0") as info:
        _train(lambda w, key, batch: w * jnp.nan, jnp.asarray(0.0), jnp.zeros((4, 1)),
               num_steps=3, batch_size=2, ema_decay=0.5)  # fmt: skip
    assert info.value.last_finite_params is None and info.value.last_finite_ema_params is None
    assert info.value.losses.shape == (0,)


def test_ema_follows_its_recursion():
    def loss_fn(w, key, batch):  # w_k = k after k steps
        return w

    decay, steps = 0.8, 13
    result = _train(loss_fn, jnp.asarray(0.0), jnp.zeros((4, 1)), num_steps=steps,
                    batch_size=2, ema_decay=decay, steps_per_chunk=5, progress=True)  # fmt: skip
    ema = 0.0
    for k in range(1, steps + 1):
        ema = decay * ema + (1 - decay) * k
    assert float(result.params) == steps
    np.testing.assert_allclose(float(result.ema_params), ema, rtol=1e-6)
    np.testing.assert_array_equal(result.losses, np.arange(steps))
    assert _train(loss_fn, jnp.asarray(0.0), jnp.zeros((4, 1)), num_steps=3,
                  batch_size=2).ema_params is None  # fmt: skip


def test_ema_warmup_follows_its_recursion():
    def loss_fn(w, key, batch):  # w_k = k after k steps
        return w

    decay, steps = 0.9, 30
    result = _train(loss_fn, jnp.asarray(0.0), jnp.zeros((4, 1)), num_steps=steps,
                    batch_size=2, ema_decay=decay, ema_warmup=True, steps_per_chunk=7)  # fmt: skip
    ema = 0.0
    for k in range(steps):  # after step k the parameter is k + 1
        d = min(decay, (1 + k) / (10 + k))
        ema = d * ema + (1 - d) * (k + 1)
    np.testing.assert_allclose(float(result.ema_params), ema, rtol=1e-6)
    # Without warm-up the average still remembers the initial 0 after 30 steps (0.9^30 = 4%).
    plain = _train(loss_fn, jnp.asarray(0.0), jnp.zeros((4, 1)), num_steps=steps,
                   batch_size=2, ema_decay=decay)  # fmt: skip
    assert float(result.ema_params) > float(plain.ema_params) + 0.5


def test_pytree_data_are_shuffled_together():
    """Points and labels travel as one pytree: every batch keeps each point with its label."""
    n = 12
    points = jnp.arange(n, dtype=jnp.float32)[:, None] * jnp.ones((1, 2))
    labels = 100 + jnp.arange(n, dtype=jnp.int32)

    def loss_fn(w, key, batch):
        x, y = batch["x"], batch["y"]
        return w * jnp.sum(jnp.abs(x[:, 0] + 100 - y))  # zero iff the rows stayed paired

    result = _train(loss_fn, jnp.asarray(1.0), {"x": points, "y": labels}, num_steps=9,
                    batch_size=4, steps_per_chunk=4)  # fmt: skip
    np.testing.assert_array_equal(result.losses, 0.0)
    with pytest.raises(ValueError, match="leading axis"):
        _train(loss_fn, jnp.asarray(1.0), {"x": points, "y": labels[:-1]}, num_steps=1,
               batch_size=4)  # fmt: skip
    with pytest.raises(ValueError, match="NaN"):
        _train(loss_fn, jnp.asarray(1.0), {"x": points.at[0, 0].set(jnp.nan), "y": labels},
               num_steps=1, batch_size=4)  # fmt: skip
    with pytest.raises(ValueError, match="dtype"):
        _train(loss_fn, jnp.asarray(1.0), {"x": points, "y": labels > 3}, num_steps=1,
               batch_size=4)  # fmt: skip


@pytest.fixture(scope="module")
def small_problem(nine):
    """A small network and the NCSN loss on 512 points of the nine Gaussians."""
    net = networks.score_network(networks.NetworkConfig(hidden_dims=(64, 64), embedding_dim=32))
    schedule = schedules.ncsn_schedule(np.geomspace(1.0, 0.05, 8))
    loss_fn = losses.ncsn_loss(networks.ncsn_score_model(net.apply), schedule)
    points = data.sample(jax.random.key(1), nine, 512)
    params = jax.jit(net.init)(jax.random.key(2), points[:1], jnp.zeros(1))
    exact = schedules.exact_ncsn_score(nine)
    exact_loss = losses.ncsn_loss(lambda p, rng, x, sigma: exact(x, sigma), schedule)
    return loss_fn, exact_loss, params, points


def test_training_lowers_the_loss_and_is_bit_reproducible(small_problem):
    loss_fn, exact_loss, params, points = small_problem
    run = lambda key, chunk: training.train(  # noqa: E731
        key, loss_fn, params, points, num_steps=400, batch_size=64, steps_per_chunk=chunk,
        ema_decay=0.99, progress=False,
    )  # fmt: skip
    first = run(jax.random.key(3), 200)
    again = run(jax.random.key(3), 200)
    for a, b in zip(
        jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(again), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    other = run(jax.random.key(4), 200)
    assert not np.array_equal(first.losses, other.losses)

    # One fixed evaluation before and after training, and at the exact score, the minimiser.
    keys = jax.random.split(jax.random.key(5), 16)
    evaluate = jax.jit(lambda f, p: jnp.mean(jax.vmap(f, (None, 0, None))(p, keys, points)),
                       static_argnums=0)  # fmt: skip
    before, after = float(evaluate(loss_fn, params)), float(evaluate(loss_fn, first.params))
    floor = float(evaluate(exact_loss, None))
    assert floor - 0.02 < after < before
    assert after - floor < 0.3 * (before - floor), (before, after, floor)
    assert float(jnp.mean(first.losses[-50:])) < float(jnp.mean(first.losses[:50]))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"batch_size": 33}, "batch_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": -5}, "num_steps"),
        ({"num_steps": 2.5}, "num_steps"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"steps_per_chunk": 0}, "steps_per_chunk"),
        ({"data": jnp.zeros(32)}, "data"),
        ({"data": jnp.zeros((0, 2))}, "data"),
        ({"data": jnp.zeros((32, 2)).at[3, 1].set(jnp.nan)}, "data"),
    ],
)
def test_bad_input_names_the_argument(kwargs, name):
    args = {"num_steps": 3, "batch_size": 8, "data": jnp.zeros((32, 2)), **kwargs}
    points = args.pop("data")
    with pytest.raises(ValueError, match=name):
        _train(lambda w, k, b: w, jnp.asarray(0.0), points, **args)
