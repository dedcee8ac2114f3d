"""Argument checks shared by the public functions: each error names the bad argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_samples(x, name: str, dim: int | None = None) -> jax.Array:
    """Return ``x`` as an (n, d) float array, or raise ValueError naming ``name``.

    Inside ``jit`` only the shape can be checked; outside it NaN and inf are rejected too.
    """
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (n, d) with n >= 1, got {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} must have {dim} columns, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
        bad = int(np.sum(~np.isfinite(np.asarray(x))))
        raise ValueError(f"{name} contains {bad} NaN or inf values")
    return x


def check_positive(value, name: str) -> float:
    """Return ``value`` as a float, or raise ValueError naming ``name`` if it is not > 0."""
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


def check_positive_int(value, name: str) -> int:
    """Return ``value`` as an int, or raise ValueError naming ``name`` if it is not >= 1."""
    if int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)
