"""The per-point likelihood solver against the exact mixture density, and its independence.

With the exact score the probability-flow ODE transports the exact marginals, so log p_eps(x)
must match the closed-form density of the mixture noised to eps; each point takes its own
steps, so its value does not depend on the other points of its batch.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diffnb import data, likelihood, sde


@pytest.fixture(scope="module")
def points(nine_points):
    return nine_points[:200]  # of tests/conftest.py's 1000 draws


@pytest.mark.parametrize("process", [sde.VPSDE(), sde.VESDE()], ids=["vp", "ve"])
def test_per_point_solver_matches_the_mixture_density(nine, points, process):
    score = sde.exact_score(process, nine)
    out = likelihood.log_likelihood(
        jax.random.key(0), score, process, points, solver="per_point", batch_size=256
    )
    scale, std = process.marginal(np.full((200,), 1e-3, np.float32))
    exact = np.asarray(data.log_prob(nine, points, scale, std), np.float64)
    # VE's prior gap reaches 0.2 nats in the tails (tests/test_likelihood.py).
    np.testing.assert_allclose(
        out.log_prob, exact, atol=0.01 if isinstance(process, sde.VPSDE) else 0.25
    )
    assert abs(float(np.mean(out.log_prob)) - float(np.mean(exact))) <= 0.01
    assert out.point_nfe.shape == (200,) and out.nfe >= out.point_nfe.max()


def test_a_point_does_not_feel_its_batch(nine, points, vp_sde):
    vp = vp_sde
    score = sde.exact_score(vp, nine)

    def call(x):
        out = likelihood.log_likelihood(
            jax.random.key(0), score, vp, x, solver="per_point", batch_size=64
        )
        return out.log_prob

    first = call(points[:64])
    shuffled = call(jnp.concatenate([points[:8], points[100:156]]))
    np.testing.assert_array_equal(shuffled[:8], first[:8])
    with pytest.raises(ValueError, match="^solver"):
        likelihood.log_likelihood(jax.random.key(0), score, vp, points, solver="rk4")
    with pytest.raises(ValueError, match="^max_nfe"):
        likelihood.log_likelihood(jax.random.key(0), score, vp, points, max_nfe=0)
