"""Train once per build: ``models.fit`` for a model that several chapters share.

``load_or_fit(key, x, model, **options)`` returns ``models.fit(key, x, model, **options)``.
When the environment variable ``DIFFNB_MODEL_STORE`` names a folder (the book's build sets it
to ``_build/models``), the first chapter to ask for a recipe trains it and saves it there; the
others load the saved file, which draws bit-identical samples. A recipe is everything that goes
into the fit, the key, the data's bytes, the model and every option, together with a hash of
``diffnb``'s sources and the JAX version and backend, so a change to any of them trains anew.
Two chapters that ask at once are serialised by a lock on the recipe's file: one trains, the
other waits and loads. Without the variable (a chapter opened alone in JupyterLab, Colab or
Binder) the model is trained in place, with the same keys and so the same numbers.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
from pathlib import Path

import jax
import numpy as np

from diffnb import models

__all__ = ["STORE_VARIABLE", "load_or_fit", "recipe_hash"]

STORE_VARIABLE = "DIFFNB_MODEL_STORE"
_PACKAGE = Path(__file__).resolve().parent


def _fingerprint(value) -> bytes:
    """Bytes that change whenever ``value`` does: arrays by dtype, shape and contents."""
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        value = jax.random.key_data(value)
    if isinstance(value, (jax.Array, np.ndarray)):
        array = np.ascontiguousarray(np.asarray(value))
        return f"{array.dtype}{array.shape}".encode() + array.tobytes()
    if isinstance(value, dict):
        items = (k.encode() + b":" + _fingerprint(value[k]) for k in sorted(value))
        return b"{" + b",".join(items) + b"}"
    if isinstance(value, (list, tuple)):
        return b"(" + b",".join(map(_fingerprint, value)) + b")"
    if dataclasses.is_dataclass(value) or isinstance(value, (str, int, float, bool, type(None))):
        return repr(value).encode()
    raise TypeError(f"load_or_fit cannot key a recipe on {type(value).__name__}: {value!r}")


def _sources_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode() + path.read_bytes())
    return digest.hexdigest()


def recipe_hash(key: jax.Array, x, model: str | None, options: dict) -> str:
    """The hex digest that names a fit: its inputs, diffnb's sources, JAX and its backend."""
    digest = hashlib.sha256()
    for part in (key, x, model, options, jax.__version__, jax.default_backend()):
        digest.update(_fingerprint(part) + b"|")
    digest.update(_sources_hash().encode())
    return digest.hexdigest()


def load_or_fit(key: jax.Array, x, model: str | None = None, **options) -> models.FittedModel:
    """``models.fit(key, x, model, **options)``, trained once per build (the module docstring).

    ``options`` must be what ``models.fit`` takes, with a ``NetworkConfig`` (not a network of
    one's own) and without ``resume`` or ``init_params``.
    """
    for name in ("resume", "init_params"):
        if options.get(name) is not None:
            raise ValueError(f"load_or_fit cannot share a fit with {name}; call models.fit")
    store = os.environ.get(STORE_VARIABLE)
    if not store:
        return models.fit(key, x, model, **options)
    folder = Path(store)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{model or models.DEFAULT_MODEL}-{recipe_hash(key, x, model, options)[:20]}"
    path = folder / f"{name}.npz"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            return models.load(path)
        fitted = models.fit(key, x, model, **options)
        os.replace(fitted.save(path.with_suffix(".partial.npz")), path)
        return fitted
