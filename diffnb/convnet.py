"""A small convolutional network for the 8x8 digits, conditioned on a noise level and a label.

The network of notebooks/digits.md. Images travel through the book as flat (n, 64) arrays
(``diffnb.digits``); the network reshapes them to (n, 8, 8, 1), and returns (n, 64), so it is a
drop-in replacement for the MLP of ``diffnb.networks`` inside ``preconditioning.edm_denoiser``
(through ``networks.with_labels``). With widths C_1, C_2 (``channels``):

    e = SiLU(Linear(SiLU(Linear(emb(c)) [+ Embed(k) when labelled]))),
    h = Conv3x3(x) at 8x8 with C_1 channels,
    h = ResBlock(h, e) x num_blocks at 8x8 (kept as skip), a stride-2 Conv3x3 to 4x4 with C_2,
    h = ResBlock(h, e) x num_blocks at 4x4, nearest-neighbour upsampling to 8x8, Conv3x3 to C_1,
    h = ResBlock([h, skip], e) x num_blocks at 8x8,  out = Conv3x3(SiLU(GroupNorm(h))) -> 64,

where emb is the sinusoidal embedding of ``networks.sinusoidal_embedding`` and each ResBlock is
GroupNorm -> SiLU -> Conv3x3, plus a per-channel shift Linear(e), GroupNorm -> SiLU -> Conv3x3,
added to its (1x1-projected) input. The label k lies in {0, ..., K - 1} for the classes and is K
for the null label, "no class" (classifier-free guidance, Ho & Salimans 2022): with the
digits' K = 10, labels 0..9 and 10. Every 3x3 convolution is a matrix product over 3x3
patches (``_conv3x3``; why, in its docstring).
"""

from __future__ import annotations

import dataclasses
import math

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from diffnb.networks import sinusoidal_embedding

__all__ = ["ConvNetConfig", "conv_network", "SIDE"]

SIDE = 8  # images are SIDE x SIDE pixels


@dataclasses.dataclass(frozen=True)
class ConvNetConfig:
    """Sizes of the convolutional network.

    Attributes:
      channels: (C_1, C_2), the widths at 8x8 and at 4x4.
      num_blocks: residual blocks per stage (down at 8x8, at 4x4, up at 8x8).
      embedding_dim: width of the sinusoidal and label embeddings (even).
      num_groups: groups of every GroupNorm; must divide both widths.
      max_positions: the slowest embedding frequency is 1 / max_positions rad per unit.
      num_classes: K classes plus the null label K; None builds the unconditional network.
    """

    channels: tuple[int, int] = (32, 64)
    num_blocks: int = 1
    embedding_dim: int = 64
    num_groups: int = 8
    max_positions: float = 10_000.0
    num_classes: int | None = 10

    def __post_init__(self):
        channels = tuple(self.channels)
        if len(channels) != 2 or any(int(c) != c or c < 1 for c in channels):
            raise ValueError(f"channels must be two positive integers, got {self.channels}")
        object.__setattr__(self, "channels", tuple(int(c) for c in channels))
        if int(self.num_blocks) != self.num_blocks or self.num_blocks < 1:
            raise ValueError(f"num_blocks must be a positive integer, got {self.num_blocks}")
        if int(self.embedding_dim) != self.embedding_dim or self.embedding_dim < 4:
            raise ValueError(f"embedding_dim must be an integer >= 4, got {self.embedding_dim}")
        if self.embedding_dim % 2:
            raise ValueError(f"embedding_dim must be even, got {self.embedding_dim}")
        g = self.num_groups
        if int(g) != g or g < 1 or any(c % g for c in self.channels):
            raise ValueError(
                f"num_groups must be a positive integer dividing channels {self.channels}, got {g}"
            )
        if not (math.isfinite(self.max_positions) and self.max_positions > 1):
            raise ValueError(f"max_positions must be a finite number > 1, got {self.max_positions}")
        if self.num_classes is not None and (
            int(self.num_classes) != self.num_classes or self.num_classes < 1
        ):
            raise ValueError(
                f"num_classes must be a positive integer or None, got {self.num_classes}"
            )


def _check_inputs(config: ConvNetConfig, x, c, k):
    dim = SIDE * SIDE
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"x must have shape (n, {dim}): flat {SIDE}x{SIDE} images, got {x.shape}")
    if c.shape != x.shape[:1]:
        raise ValueError(f"c must have shape ({x.shape[0]},) to match x, got {c.shape}")
    if config.num_classes is None:
        return
    if k is None or k.shape != x.shape[:1] or not jnp.issubdtype(k.dtype, jnp.integer):
        shape = None if k is None else (k.dtype, k.shape)
        raise ValueError(f"k must be integer labels of shape ({x.shape[0]},), got {shape}")
    if not isinstance(k, jax.core.Tracer):
        values = np.asarray(k)
        bad = values[(values < 0) | (values > config.num_classes)]
        if bad.size:
            raise ValueError(
                f"k must be classes 0..{config.num_classes - 1} or the null label "
                f"{config.num_classes}, got {int(bad[0])}"
            )


def _conv3x3(h, width: int, name: str, stride: int = 1, w_init=None):
    """A 3x3 convolution with zero padding, written as one matrix product over 3x3 patches.

    The same map as ``hk.Conv2D(width, 3, stride)``; on a CPU, XLA runs this form inside
    ``lax.scan`` (``training.train``) about as fast as outside it, where a native convolution
    inside a scan ran many times slower than a jitted step on its own.
    """
    side = h.shape[1]
    padded = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
    shifts = [padded[:, i : i + side, j : j + side, :] for i in range(3) for j in range(3)]
    patches = jnp.concatenate(shifts, axis=-1)[:, ::stride, ::stride, :]
    return hk.Linear(width, w_init=w_init, name=name)(patches)


def _res_block(config: ConvNetConfig, h, e, width: int, name: str):
    with hk.experimental.name_scope(name):
        skip = h if h.shape[-1] == width else hk.Linear(width, name="skip")(h)  # 1x1
        h = hk.GroupNorm(config.num_groups, name="norm_1")(h)
        h = _conv3x3(jax.nn.silu(h), width, "conv_1")
        h = h + hk.Linear(width, name="emb")(e)[:, None, None, :]
        h = hk.GroupNorm(config.num_groups, name="norm_2")(h)
        h = _conv3x3(jax.nn.silu(h), width, "conv_2")
        return h + skip


def _convnet(config: ConvNetConfig, x, c, k=None):
    _check_inputs(config, x, c, k)
    c1, c2 = config.channels
    n = x.shape[0]
    emb = sinusoidal_embedding(c, config.embedding_dim, config.max_positions)
    e = hk.Linear(config.embedding_dim, name="emb_in")(emb)
    if config.num_classes is not None:
        e = e + hk.Embed(config.num_classes + 1, config.embedding_dim, name="label")(k)
    e = hk.Linear(config.embedding_dim, name="emb_out")(jax.nn.silu(e))
    e = jax.nn.silu(e)

    h = _conv3x3(x.reshape(n, SIDE, SIDE, 1), c1, "conv_in")
    for b in range(config.num_blocks):
        h = _res_block(config, h, e, c1, f"down_{b}")
    skip = h
    h = _conv3x3(h, c2, "downsample", stride=2)  # 8x8 -> 4x4
    for b in range(config.num_blocks):
        h = _res_block(config, h, e, c2, f"middle_{b}")
    h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # 4x4 -> 8x8, nearest neighbour
    h = _conv3x3(h, c1, "upsample")
    h = jnp.concatenate([h, skip], axis=-1)
    for b in range(config.num_blocks):
        h = _res_block(config, h, e, c1, f"up_{b}")
    h = jax.nn.silu(hk.GroupNorm(config.num_groups, name="norm_out")(h))
    out = _conv3x3(h, 1, "conv_out", w_init=hk.initializers.Constant(0.0))
    return out.reshape(n, SIDE * SIDE)


def conv_network(config: ConvNetConfig = ConvNetConfig()) -> hk.Transformed:
    """The network as ``init(key, x, c[, k])`` and ``apply(params, rng, x, c[, k])``.

    ``x`` (n, 64) flat images, ``c`` (n,) the conditioning value (EDM's c_noise = log(sigma)/4
    in notebooks/digits.md), ``k`` (n,) integer labels in 0..K (K the null label) when
    ``config.num_classes`` is K, absent when it is None. ``apply`` returns (n, 64); its last
    convolution starts at zero, so an untrained network outputs 0 (under EDM's
    preconditioning the denoiser then starts at c_skip x). ``rng`` is unused (no dropout) and
    may be None. Raises ValueError, naming the argument, for images not of shape (n, 64), a
    ``c`` of the wrong shape, or labels that are not integers in 0..K (checked outside jit).
    """
    if not isinstance(config, ConvNetConfig):
        raise ValueError(f"config must be a ConvNetConfig, got {type(config).__name__}")
    if config.num_classes is not None:
        return hk.transform(lambda x, c, k: _convnet(config, x, c, k))
    return hk.transform(lambda x, c: _convnet(config, x, c))
