"""The score network: an MLP conditioned on a noise level through a sinusoidal embedding.

The network is Dirmeier's (2023) MLP written as a plain function and transformed once by
Haiku:

    e = GELU(W_e emb(c) + b_e),   h = W_x x + b_x + e,
    h = GELU(W_k h + b_k)  for each hidden width,   out = W_o LayerNorm(h) + b_o [+ W_s x],

where ``emb`` is the sinusoidal embedding of a scalar conditioning value ``c`` per point.
The raw output is turned into a score or a noise prediction by the parameterisations at the
bottom of this module, which fix the scale of the input and the output:

- the embedding sees a conditioning value that varies over many radians: ``log sigma`` for
  noise levels, ``TIME_SCALE * t / T`` for continuous time, ``TIME_SCALE * (i + 1) / N`` for
  DDPM steps. A raw sigma in [0.01, 1] or a raw t in [0, 1] barely moves even the fastest
  sinusoid (1 rad per unit), so the embedding would be nearly constant;
- a score is predicted as ``net(x, c) / std``. With the weight lambda = std^2 the loss is
  then 1/2 E|net + eps|^2: the network regresses on the unit-scale kernel noise eps at every
  noise level, instead of on the denoising target eps / std (the score of q(x_t | x_0)),
  whose RMS is sqrt(d) / std ~ 141 at std = 0.01. It is this target that is large, not the
  score: on the nine Gaussians the RMS of the marginal score grad log q_sigma is about 5.7 at
  sigma = 0.01, and the network's optimum std * grad log q has RMS below sqrt(d) at every
  level (measured in notebooks/ncsn.md, section "The network"). A DDPM network predicts eps
  directly, whose target also has unit scale.

The network and its embedding are presented in notebooks/ncsn.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import haiku as hk
import jax
import jax.numpy as jnp

__all__ = [
    "TIME_SCALE",
    "NetworkConfig",
    "sinusoidal_embedding",
    "score_network",
    "classifier_network",
    "with_labels",
    "num_params",
    "ncsn_score_model",
    "sde_score_model",
    "ddpm_eps_model",
    "sde_classifier_model",
]

# Continuous time t in [0, T] is shown to the embedding as TIME_SCALE * t / T, the range of a
# 1000-step DDPM index.
TIME_SCALE = 999.0

# A model function, the protocol every loss consumes: apply(params, rng, x (n, d), cond (n,)).
# ``rng`` feeds dropout and may be None (no dropout). ``cond`` is sigma (NCSN), t (SDEs) or the
# integer step i (DDPM); the model function turns it into the network's conditioning value.
ModelFn = Callable[[hk.Params, jax.Array | None, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Sizes of the score MLP. The defaults are Dirmeier's (2023) printed sizes.

    Attributes:
      output_dim: dimension d of the data (and of the output).
      hidden_dims: widths of the Linear + GELU layers after the input sum.
      embedding_dim: width of the sinusoidal embedding and of the input layers (even).
      max_positions: the slowest embedding frequency is 1 / max_positions rad per unit.
      dropout_rate: dropout before the output layer, in [0, 1); 0 (off) by default because it
        makes the score random at training time.
      linear_skip: add a linear map of the input to the output, ``out += W_s x`` (W_s starts at
        zero). The LayerNorm bounds the rest of the output, so without the skip the network
        cannot follow a target that grows with |x|, such as the noise -eps ~ -x at large t for
        points far in the prior's tail (notebooks/sde.md). Off by default: Dirmeier's (2023)
        network has none.
      num_classes: with K classes, the network also takes a label k in {0, ..., K} (K is the
        null label, "no class") whose learned embedding is added to the noise embedding; None
        (the default) builds the unconditional network, unchanged.
    """

    output_dim: int = 2
    hidden_dims: tuple[int, ...] = (256, 256)
    embedding_dim: int = 256
    max_positions: float = 10_000.0
    dropout_rate: float = 0.0
    linear_skip: bool = False
    num_classes: int | None = None

    def __post_init__(self):
        if int(self.output_dim) != self.output_dim or self.output_dim < 1:
            raise ValueError(f"output_dim must be a positive integer, got {self.output_dim}")
        hidden = tuple(self.hidden_dims)
        if any(int(h) != h or h < 1 for h in hidden):
            raise ValueError(f"hidden_dims must be positive integers, got {self.hidden_dims}")
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in hidden))
        if int(self.embedding_dim) != self.embedding_dim or self.embedding_dim < 4:
            raise ValueError(f"embedding_dim must be an integer >= 4, got {self.embedding_dim}")
        if self.embedding_dim % 2:
            raise ValueError(f"embedding_dim must be even, got {self.embedding_dim}")
        if not (math.isfinite(self.max_positions) and self.max_positions > 1):
            raise ValueError(f"max_positions must be a finite number > 1, got {self.max_positions}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")
        if self.num_classes is not None and (
            int(self.num_classes) != self.num_classes or self.num_classes < 1
        ):
            raise ValueError(
                f"num_classes must be a positive integer or None, got {self.num_classes}"
            )


def sinusoidal_embedding(c: jax.Array, dim: int, max_positions: float = 10_000.0) -> jax.Array:
    """Embed one scalar per point as [sin(c w_k), cos(c w_k)], shape (n, dim).

    The frequencies are geometric, w_k = max_positions^(-k / (dim/2 - 1)) for k = 0..dim/2-1,
    from 1 rad per unit down to 1 / max_positions. Inputs must vary by several radians across
    their range for the embedding to separate them: pass log sigma or a scaled t.
    """
    if c.ndim != 1:
        raise ValueError(f"c must have shape (n,), got {c.shape}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_positions) / (half - 1) * jnp.arange(half, dtype=jnp.float32))
    angles = c.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def _mlp(
    config: NetworkConfig,
    x: jax.Array,
    c: jax.Array,
    k: jax.Array | None = None,
    out_features: int | None = None,
) -> jax.Array:
    if x.ndim != 2 or x.shape[1] != config.output_dim:
        raise ValueError(f"x must have shape (n, {config.output_dim}), got {x.shape}")
    if c.shape != x.shape[:1]:
        raise ValueError(f"c must have shape ({x.shape[0]},) to match x, got {c.shape}")
    emb = sinusoidal_embedding(c, config.embedding_dim, config.max_positions)
    h = hk.Linear(config.embedding_dim, name="x_in")(x)
    h = h + jax.nn.gelu(hk.Linear(config.embedding_dim, name="c_in")(emb))
    if config.num_classes is not None:
        if k is None or k.shape != x.shape[:1] or not jnp.issubdtype(k.dtype, jnp.integer):
            shape = None if k is None else k.shape
            raise ValueError(f"k must be integer labels of shape ({x.shape[0]},), got {shape}")
        h = h + hk.Embed(config.num_classes + 1, config.embedding_dim, name="label")(k)
    for k, width in enumerate(config.hidden_dims):
        h = jax.nn.gelu(hk.Linear(width, name=f"hidden_{k}")(h))
    h = hk.LayerNorm(axis=-1, create_scale=True, create_offset=True, name="norm")(h)
    if config.dropout_rate > 0:
        key = hk.maybe_next_rng_key()
        if key is not None:  # dropout only when a key is given, i.e. at training time
            h = hk.dropout(key, config.dropout_rate, h)
    width = config.output_dim if out_features is None else out_features
    out = hk.Linear(width, name="out")(h)
    if config.linear_skip:
        zeros = hk.initializers.Constant(0.0)
        out = out + hk.Linear(width, with_bias=False, w_init=zeros, name="skip")(x)
    return out


def score_network(config: NetworkConfig = NetworkConfig()) -> hk.Transformed:
    """The MLP as a transformed pair ``init(key, x, c)`` and ``apply(params, rng, x, c)``.

    ``x`` is (n, d) and ``c`` (n,) the conditioning value (see the module docstring for its
    scale). ``apply`` returns the raw output, shape (n, d); ``rng`` may be None, and is used
    only for dropout. Wrap ``apply`` with ``ncsn_score_model``, ``sde_score_model`` or
    ``ddpm_eps_model`` to obtain a model function for the losses.
    """
    if config.num_classes is not None:  # init(key, x, c, k), apply(params, rng, x, c, k)
        return hk.transform(lambda x, c, k: _mlp(config, x, c, k))
    return hk.transform(lambda x, c: _mlp(config, x, c))


def classifier_network(config: NetworkConfig, num_classes: int) -> hk.Transformed:
    """A noise-conditional classifier: the score MLP's body with ``num_classes`` logits out.

    ``init(key, x, c)`` and ``apply(params, rng, x, c)`` take points x (n, d) with
    d = ``config.output_dim`` and the conditioning value c (n,), as ``score_network`` does,
    and return unnormalised logits (n, num_classes); log p_t(k | x) is their log-softmax
    (notebooks/guidance.md, eq. ``guidance-classifier-loss``). ``config.num_classes`` must be
    None: the classifier takes no label as input. Wrap ``apply`` with
    ``sde_classifier_model`` for continuous time.
    """
    if not isinstance(config, NetworkConfig):
        raise ValueError(f"config must be a NetworkConfig, got {type(config).__name__}")
    if config.num_classes is not None:
        raise ValueError("config.num_classes must be None for a classifier (no label input)")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    num_classes = int(num_classes)
    return hk.transform(lambda x, c: _mlp(config, x, c, out_features=num_classes))


def with_labels(make_model, net_apply, *args, **kwargs):
    """A labelled model ``apply(params, rng, x, cond, k)`` from a model factory.

    ``make_model`` is ``ncsn_score_model``, ``sde_score_model`` or ``ddpm_eps_model``;
    ``net_apply(params, rng, x, c, k)`` is the apply of a network built with ``num_classes``.
    The label k (n,) reaches the network unchanged; the parameterisation is the factory's.
    """

    def apply(params, rng, x, cond, k):
        unlabelled = lambda p, r, x_, c: net_apply(p, r, x_, c, k)  # noqa: E731
        return make_model(unlabelled, *args, **kwargs)(params, rng, x, cond)

    return apply


def num_params(params: hk.Params) -> int:
    """The number of scalars in a parameter tree."""
    return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))


def ncsn_score_model(net_apply) -> ModelFn:
    """NCSN score s(x, sigma) = net(x, log sigma) / sigma, with sigma (n,) the noise level.

    With lambda(sigma) = sigma^2 the loss of notebooks/ncsn.md, eq. ``ncsn-loss``, becomes
    1/2 E||net + eps||^2, so the target of ``net`` is the unit-scale kernel noise -eps at
    every level, and its optimum sigma * grad log q_sigma has RMS at most sqrt(d).
    """

    def apply(params, rng, x, sigma):
        return net_apply(params, rng, x, jnp.log(sigma)) / sigma[:, None]

    return apply


def sde_score_model(net_apply, sde, time_scale: float = TIME_SCALE) -> ModelFn:
    """SDE score s(x, t) = net(x, time_scale t / T) / std(t), std from ``sde.marginal(t)``.

    std(t) is the standard deviation of q_0t(x_t | x_0) (notebooks/sde.md, eq. ``sde-dsm``),
    so the network's target -eps has unit scale at every t. ``time_scale`` sets how
    many radians the embedding's fastest sinusoid turns over [0, T]: the default matches a
    1000-step DDPM; the SDE chapter uses 50, which keeps the learned field smooth enough in t
    for an adaptive ODE solver.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a finite positive number, got {time_scale}")
    scale = time_scale / sde.T

    def apply(params, rng, x, t):
        _, std = sde.marginal(t)
        return net_apply(params, rng, x, scale * t) / std[:, None]

    return apply


def ddpm_eps_model(net_apply, num_steps: int) -> ModelFn:
    """DDPM noise prediction eps(x, i) = net(x, TIME_SCALE (i + 1) / N) for steps i in 0..N-1.

    Paper time t = i + 1 is shown on the same scale as continuous time, so a network for
    N = 100 or N = 1000 steps sees the same range (notebooks/ddpm.md, eq. ``ddpm-simple``).
    """
    if int(num_steps) != num_steps or num_steps < 1:
        raise ValueError(f"num_steps must be a positive integer, got {num_steps}")
    scale = TIME_SCALE / int(num_steps)

    def apply(params, rng, x, i):
        return net_apply(params, rng, x, scale * (i + 1).astype(x.dtype))

    return apply


def sde_classifier_model(net_apply, sde, time_scale: float = TIME_SCALE) -> ModelFn:
    """Classifier log-probabilities log p_t(k | x) = log_softmax(net(x, time_scale t / T)).

    ``net_apply`` is the apply of ``classifier_network``; the model returns (n, K)
    normalised log-probabilities at time t (n,) of ``sde`` (notebooks/guidance.md, eq.
    ``guidance-classifier-loss``). The time embedding is ``sde_score_model``'s.
    """
    if not (math.isfinite(time_scale) and time_scale > 0):
        raise ValueError(f"time_scale must be a finite positive number, got {time_scale}")
    scale = time_scale / sde.T

    def apply(params, rng, x, t):
        return jax.nn.log_softmax(net_apply(params, rng, x, scale * t), axis=-1)

    return apply
