"""Data-parallel training: two CPU devices give the one-device run's numbers, batch split in two.

JAX fixes its device count when it starts, so the check runs in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` and reports back as JSON.
"""

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import json

    import jax
    import jax.numpy as jnp
    import numpy as np

    from diffnb import data, losses, networks, sde, training

    assert jax.local_device_count() == 2, jax.devices()
    net = networks.score_network(networks.NetworkConfig(hidden_dims=(32, 32), embedding_dim=16))
    vp = sde.VPSDE()
    dsm = losses.dsm_loss(networks.sde_score_model(net.apply, vp), vp, "sigma2")
    shard_shapes = []

    def loss_fn(params, key, batch):  # the points travel with a label, as pytree data
        jax.debug.inspect_array_sharding(
            batch["x"], callback=lambda s: shard_shapes.append(s.shard_shape((64, 2)))
        )
        return dsm(params, key, batch["x"]) + 0.0 * jnp.sum(batch["k"])

    x = data.sample(jax.random.key(0), data.nine_gaussians(), 1000)
    batch = {"x": x, "k": jnp.arange(1000)}
    params = net.init(jax.random.key(1), x[:1], jnp.zeros(1))
    run = lambda devices: training.train(
        jax.random.key(2), loss_fn, params, batch, num_steps=60, batch_size=64,
        ema_decay=0.9, steps_per_chunk=30, devices=devices, progress=False,
    )
    one = run(1)
    shapes_one = sorted({tuple(s) for s in shard_shapes})
    shard_shapes.clear()
    two = run(None)
    leaves = lambda tree: [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]
    try:
        training.train(
            jax.random.key(2), loss_fn, params, batch, num_steps=1, batch_size=63,
            progress=False,
        )
        error = ""
    except ValueError as e:
        error = str(e)
    print(json.dumps({
        "loss_gap": float(np.max(np.abs(np.asarray(one.losses) - np.asarray(two.losses)))),
        "loss_scale": float(np.max(np.abs(np.asarray(one.losses)))),
        "param_gap": max(float(np.max(np.abs(a - b))) for a, b in
                         zip(leaves(one.params), leaves(two.params), strict=True)),
        "ema_gap": max(float(np.max(np.abs(a - b))) for a, b in
                       zip(leaves(one.ema_params), leaves(two.ema_params), strict=True)),
        "shard_shapes_one": shapes_one,
        "shard_shapes_two": sorted({tuple(s) for s in shard_shapes}),
        "replicated": all(leaf.sharding.is_fully_replicated and len(leaf.devices()) == 2
                          for leaf in jax.tree_util.tree_leaves(two.params)),
        "error": error,
    }))
    """
)


def test_two_devices_give_the_one_device_numbers_with_the_batch_split():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # Float32 sums taken in another order: 60 AdamW steps stay within 1e-4 of each other.
    assert report["loss_gap"] <= 1e-5 * max(1.0, report["loss_scale"]), report
    assert report["param_gap"] <= 1e-4, report
    assert report["ema_gap"] <= 1e-4, report
    # While the step runs each of the two devices holds half of every batch of 64.
    assert report["shard_shapes_one"] == [[64, 2]], report
    assert report["shard_shapes_two"] == [[32, 2]], report
    assert report["replicated"], report  # the parameters live whole on both devices
    assert "batch_size must be a multiple of the 2 devices" in report["error"], report
