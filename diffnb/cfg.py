"""A class-conditional score network for classifier-free guidance, trained on a mixture.

One network s_theta(x, t, k) with a null label k = num_classes learns the labelled scores and,
through label dropout, the unconditional one (notebooks/guidance.md, section 4;
``losses.cfg_dsm_loss``). Used by the guidance chapter and by benchmarks/label_dropout.py.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from diffnb import conditional, data, losses, networks, training
from diffnb._checks import check_positive, check_positive_int
from diffnb.sde import SDE, VPSDE

__all__ = ["CFGModel", "train_cfg"]


class CFGModel(NamedTuple):
    """The trained scores: ``conditional(x, t, k)`` (k a scalar or (n,)), ``unconditional(x,
    t)`` (the null label's), the model function ``apply(params, rng, x, t, k)``, its EMA
    ``params`` and the training ``losses``."""

    conditional: conditional.LabelledFn
    unconditional: conditional.ScoreFn
    apply: networks.ModelFn
    params: dict
    losses: jax.Array


def train_cfg(
    key: jax.Array,
    mixture: data.GaussianMixture,
    p_drop: float = 0.2,
    *,
    sde: SDE | None = None,
    num_points: int = 50_000,
    num_steps: int = 4000,
    batch_size: int = 512,
    hidden_dims: tuple[int, ...] = (64, 64),
    time_scale: float = 50.0,
) -> CFGModel:
    """Train the chapters' labelled MLP with label dropout ``p_drop`` on ``num_points``
    labelled draws of ``mixture`` (one class per component), for the VP SDE by default.

    The loss is ``losses.cfg_dsm_loss``: each label is replaced by the null label with
    probability p_drop, so s(., ., null) learns the unconditional score. AdamW with warm-up and
    cosine decay, and an EMA of the weights (decay 0.999, with warm-up).
    """
    sde = VPSDE() if sde is None else sde
    num_classes = mixture.num_components
    if not 0.0 < float(p_drop) < 1.0:
        raise ValueError(f"p_drop must lie in (0, 1), got {p_drop}")
    num_points = check_positive_int(num_points, "num_points")
    time_scale = check_positive(time_scale, "time_scale")
    key_data, key_init, key_fit = jax.random.split(key, 3)
    config = networks.NetworkConfig(
        output_dim=mixture.dim, hidden_dims=tuple(hidden_dims),
        embedding_dim=64, linear_skip=True, num_classes=num_classes,
    )  # fmt: skip
    net = networks.score_network(config)
    x, k = conditional.sample_with_labels(key_data, mixture, num_points)
    params = net.init(key_init, x[:1], jnp.zeros(1), k[:1])
    apply = networks.with_labels(networks.sde_score_model, net.apply, sde, time_scale=time_scale)
    loss = losses.cfg_dsm_loss(apply, sde, num_classes, float(p_drop))
    fit = training.train(
        key_fit, loss, params, {"x": x, "k": k}, num_steps=num_steps, batch_size=batch_size,
        ema_decay=0.999, ema_warmup=True, progress=False,
    )  # fmt: skip
    ema = fit.ema_params

    def conditional_fn(x, t, k):
        return apply(ema, None, x, t, jnp.broadcast_to(k, x.shape[:1]).astype(jnp.int32))

    def unconditional_fn(x, t):
        return apply(ema, None, x, t, jnp.full(x.shape[:1], num_classes, jnp.int32))

    return CFGModel(conditional_fn, unconditional_fn, apply, ema, fit.losses)
