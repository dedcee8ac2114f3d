"""FLOPs of one training step of the score MLP, counted by hand and by XLA.

By hand we count the multiply-adds of the dense layers only (2 FLOPs each), the usual
convention for a model-FLOP rate: for a layer with an (a, b) weight and a batch of B points,
the forward pass costs 2 B a b, the weight gradient 2 B a b, and the input gradient 2 B a b
unless the layer reads the data or the (parameter-free) embedding, whose gradient is never
needed. Element-wise work (GELU, LayerNorm, the embedding's sines, AdamW) is left out; XLA's
cost analysis counts it too, which is why its number is a little larger.
"""

from __future__ import annotations

import jax


def dense_shapes(config) -> list[tuple[int, int]]:
    """The (fan_in, fan_out) of each dense layer of ``diffnb.networks`` with ``config``."""
    e = config.embedding_dim
    widths = [e, *config.hidden_dims]
    shapes = [(config.output_dim, e), (e, e)]  # x_in, c_in (their inputs need no gradient)
    shapes += list(zip(widths[:-1], widths[1:], strict=True))
    shapes.append((widths[-1], config.output_dim))
    return shapes


def hand_step_flops(config, batch_size: int) -> int:
    """Dense-layer FLOPs of forward + backward for one step: 6 B sum(a b) - 2 B (first two)."""
    shapes = dense_shapes(config)
    macs = sum(a * b for a, b in shapes)
    no_input_grad = sum(a * b for a, b in shapes[:2])
    return 2 * batch_size * (3 * macs - no_input_grad)


def xla_flops(fn, *args) -> float:
    """XLA's FLOP count of ``jax.jit(fn)(*args)`` from the compiled cost analysis (nan if none)."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else {}
    return float((analysis or {}).get("flops", float("nan")))
