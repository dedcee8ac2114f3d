"""Sampling speed with a trained score network: PF-ODE (un-jitted vs jitted field), annealed
Langevin and DDPM ancestral sampling, as the chapters call them.

The network is the NCSN one trained by the benchmark, used on the VE SDE of the same ladder
(sigma(t) = std of q_0t, so s(x, t) = net(x, log sigma(t)) / sigma(t)). The ancestral sampler
reuses the same parameters as a noise predictor: that is for timing only, the samples mean
nothing. Each diffnb sampler is called once to compile, then timed.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy import integrate

from diffnb import networks, samplers, schedules
from diffnb.sde import VPSDE

# notebooks/ncsn.md samples with these; notebooks/ddpm.md with Ho et al.'s N = 1000.
STEPS_PER_LEVEL, STEP_SIZE, DDPM_STEPS = 100, 1e-4, 1000


def _timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return time.perf_counter() - start, out


def pf_ode_unjitted(key, score_fn, sde, n, dim=2, rtol=1e-5, atol=1e-5, eps=1e-3):
    """Dirmeier's (2023) way: solve_ivp (RK45) on a right-hand side that runs op by op."""
    x_init = np.asarray(sde.prior_sample(key, n, dim), dtype=np.float64)
    field = sde.probability_flow(score_fn)

    def rhs(t, y):
        x = jnp.asarray(y.reshape(n, dim), dtype=jnp.float32)
        return np.asarray(field(x, jnp.full((n,), t, jnp.float32)), dtype=np.float64).ravel()

    sol = integrate.solve_ivp(rhs, (sde.T, eps), x_init.ravel(), method="RK45",
                              rtol=rtol, atol=atol)  # fmt: skip
    if not sol.success:
        raise RuntimeError(f"solve_ivp failed: {sol.message}")
    return sol.y[:, -1].reshape(n, dim), sol.nfev


def sampling_times(key, setup, params, n: int, steps_per_level: int = STEPS_PER_LEVEL) -> dict:
    """Seconds (and NFE) of each sampler for ``n`` points; keys: see the returned dict."""
    key_ode, key_langevin, key_ddpm = jax.random.split(key, 3)
    model = networks.ncsn_score_model(setup.net.apply)
    ncsn_score = lambda x, sigma: model(params, None, x, sigma)  # noqa: E731
    sde = setup.sde
    sde_score = lambda x, t: model(params, None, x, sde.sigma(t))  # noqa: E731
    out = {}

    seconds, (_, nfe) = _timed(lambda: pf_ode_unjitted(key_ode, sde_score, sde, n))
    out["ode_unjitted"] = (seconds, nfe)
    _timed(lambda: samplers.probability_flow_ode(key_ode, sde_score, sde, n))  # compile
    seconds, result = _timed(lambda: samplers.probability_flow_ode(key_ode, sde_score, sde, n))
    out["ode_jitted"] = (seconds, result.nfe)

    def langevin():
        return samplers.annealed_langevin(
            key_langevin,
            ncsn_score,
            setup.schedule,
            n,
            steps_per_level=steps_per_level,
            step_size=STEP_SIZE,
        )

    _timed(langevin)
    seconds, result = _timed(langevin)
    out["langevin"] = (seconds, result.nfe)

    schedule = schedules.ddpm_from_vp(VPSDE(), DDPM_STEPS)
    eps_model = networks.ddpm_eps_model(setup.net.apply, DDPM_STEPS)
    eps_fn = lambda x, i: eps_model(params, None, x, i)  # noqa: E731

    def ancestral():
        return samplers.ddpm_ancestral(key_ddpm, eps_fn, schedule, n)

    _timed(ancestral)
    seconds, result = _timed(ancestral)
    out["ancestral"] = (seconds, result.nfe)
    return out
