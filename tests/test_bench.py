"""The speed benchmark (benchmarks/speed.py): its baselines compute the same network, and a
tiny run of the whole script finishes and prints sane figures, so the benchmark cannot rot."""

import math
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import networks

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks/ is not installed with diffnb
from benchmarks import training_jax  # noqa: E402

FINAL_KEYS = ["speedup_vs_loop", "speedup_vs_torch", "fraction_of_matmul",
              "ratio_vs_pure_jax", "ode_speedup"]  # fmt: skip


@pytest.fixture(scope="module")
def net_and_inputs():
    config = networks.NetworkConfig()
    net = networks.score_network(config)
    key_init, key_x, key_c = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(key_x, (32, 2))
    c = jax.random.uniform(key_c, (32,), minval=-4.6, maxval=0.0)  # log sigma in [log .01, 0]
    return config, net, net.init(key_init, x, c), x, c


def test_reference_mlp_is_the_diffnb_network(net_and_inputs):
    """The hand-written baseline has the network's parameter shapes and computes its output."""
    config, net, params, x, c = net_and_inputs
    ref_shapes = jax.tree.map(jnp.shape, training_jax.init_mlp(jax.random.key(0), config))
    assert ref_shapes == jax.tree.map(jnp.shape, params)
    np.testing.assert_allclose(
        training_jax.mlp(params, config, x, c), net.apply(params, None, x, c), atol=1e-5
    )


@pytest.mark.torch
def test_torch_baseline_is_the_diffnb_network(net_and_inputs):
    """The PyTorch baseline, given the Haiku weights, computes the same output."""
    import torch

    from benchmarks.training_torch import build_model

    config, net, params, x, c = net_and_inputs
    model = build_model(config)
    with torch.no_grad():
        for name, layer in [("x_in", model.x_in), ("c_in", model.c_in), ("out", model.out)] + [
            (f"hidden_{k}", layer) for k, layer in enumerate(model.hidden)
        ]:
            layer.weight.copy_(torch.tensor(np.asarray(params[name]["w"]).T))
            layer.bias.copy_(torch.tensor(np.asarray(params[name]["b"])))
        model.norm.weight.copy_(torch.tensor(np.asarray(params["norm"]["scale"])))
        model.norm.bias.copy_(torch.tensor(np.asarray(params["norm"]["offset"])))
        out = model(torch.tensor(np.asarray(x)), torch.tensor(np.asarray(c))).numpy()
    np.testing.assert_allclose(out, net.apply(params, None, x, c), atol=1e-4)


@pytest.mark.slow  # a smoke run of benchmarks/speed.py: make bench and make test-slow
def test_tiny_benchmark_runs():
    """`speed.py --tiny` ends with the five figures; its hand FLOP count matches XLA's."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--tiny"]
    try:
        import torch  # noqa: F401
    except ImportError:
        cmd.append("--no-torch")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    final = dict(item.split("=") for item in lines[-1].split())
    assert list(final) == FINAL_KEYS
    for key, value in final.items():
        value = float(value)
        if key == "speedup_vs_torch" and "--no-torch" in cmd:
            assert math.isnan(value)
        else:
            assert math.isfinite(value) and value > 0, (key, value)
    # Dense layers dominate the step: XLA's count (which adds the element-wise work) is at
    # least the hand count and within 20% of it.
    counts = re.search(r"([\d.]+) M by hand.*?([\d.]+) M by XLA", proc.stdout)
    hand, xla = float(counts[1]), float(counts[2])
    assert hand <= xla <= 1.2 * hand
    # The jitted field and the un-jitted one solve the same ODE: equal NFE up to rounding.
    nfe = [int(m) for m in re.findall(r"PF-ODE.*NFE (\d+)", proc.stdout)]
    assert len(nfe) == 2 and abs(nfe[0] - nfe[1]) <= 0.1 * nfe[0]
