"""Argument checks shared by the public functions: each error names the bad argument."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_samples(x, name: str, dim: int | None = None) -> jax.Array:
    """Return ``x`` as an (n, d) float array, or raise ValueError naming ``name``.

    Inside ``jit`` only the shape can be checked; outside it NaN and inf are rejected too.
    """
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    if jnp.issubdtype(dtype, jnp.complexfloating) or jnp.issubdtype(dtype, jnp.bool_):
        raise ValueError(f"{name} must be real numbers, got dtype {dtype}")
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


def check_nonnegative_int(value, name: str) -> int:
    """Return ``value`` as an int, or raise ValueError naming ``name`` if it is not >= 0."""
    if isinstance(value, bool) or int(value) != value or int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value}")
    return int(value)


def check_data_matrix(x, name: str) -> jax.Array:
    """``check_samples`` for training data, which must also have more rows than columns.

    An (n, d) array with n <= d is almost always a transposed (d, n) one: the error says so.
    """
    x = check_samples(x, name)
    n, d = x.shape
    if n <= d:
        raise ValueError(
            f"{name} has shape {x.shape}: {n} points in {d} dimensions; rows are points, so "
            f"with fewer rows than columns it is probably transposed (pass {name}.T)"
        )
    return x


def check_key(key, name: str = "key") -> jax.Array:
    """Return ``key`` if it is a JAX PRNG key (typed or a raw uint32 (2,)), else ValueError."""
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0:
            return key
        if key.dtype == jnp.uint32 and key.shape == (2,):
            return key
    raise ValueError(
        f"{name} must be a PRNG key such as jax.random.key(0), got {type(key).__name__}"
        + (f" of dtype {key.dtype} and shape {key.shape}" if hasattr(key, "dtype") else "")
    )
