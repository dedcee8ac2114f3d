"""The book's trained models of the nine Gaussians: one recipe per model, shared by chapters.

The comparison chapter trains the five models with the recipes below and puts them side by
side; the sampling and training chapters take its VP model. All of them call ``book_model``,
so each model is trained once per build (``build_cache``) and every chapter shows the same fit.

The recipe: 50,000 training points; the MLP of ``networks`` with two hidden layers of 128 and a
128-dimensional embedding of the noise level; 8,000 AdamW steps on batches of 512 with
``training.default_optimizer``; in the data's own coordinates (``standardize=False``), so that
the exact score of the noised mixture is the oracle for every model as it stands. NCSN (20
levels from sigma_max = 1 to 0.01) and DDPM (1000 steps) keep their last iterate, as their
papers do; the SDE models show the embedding 50 t, add a linear skip from input to output and
keep an exponential moving average (0.999) of the weights.
"""

from __future__ import annotations

import jax

from diffnb import build_cache, data, models, networks

__all__ = [
    "NAMES",
    "NUM_POINTS",
    "NUM_STEPS",
    "BATCH_SIZE",
    "RECIPES",
    "book_model",
    "training_points",
]

NUM_POINTS, NUM_STEPS, BATCH_SIZE = 50_000, 8_000, 512
NET = networks.NetworkConfig(hidden_dims=(128, 128), embedding_dim=128)
NET_SKIP = networks.NetworkConfig(hidden_dims=(128, 128), embedding_dim=128, linear_skip=True)
_SDE = {"network": NET_SKIP, "time_scale": 50.0, "ema_decay": 0.999, "ema_warmup": False}
RECIPES = {
    "ncsn": {"network": NET, "sigma_max": 1.0, "ema_decay": None},
    "ddpm": {"network": NET, "ema_decay": None},
    "ve": _SDE,
    "vp": _SDE,
    "subvp": _SDE,
}
NAMES = tuple(RECIPES)


def _keys() -> tuple[jax.Array, jax.Array]:
    """The training points' key and the fit's (the comparison chapter's first and fourth)."""
    keys = jax.random.split(jax.random.PRNGKey(0), 10)
    return keys[0], keys[3]


def training_points() -> jax.Array:
    """(NUM_POINTS, 2) points of ``data.nine_gaussians()``, the same in every chapter."""
    return data.sample(_keys()[0], data.nine_gaussians(), NUM_POINTS)


def book_model(name: str) -> models.FittedModel:
    """The book's ``name`` model (one of ``NAMES``), trained once per build."""
    if name not in RECIPES:
        raise ValueError(f"name must be one of {NAMES}, got {name!r}")
    return build_cache.load_or_fit(
        _keys()[1],
        training_points(),
        name,
        num_steps=NUM_STEPS,
        batch_size=BATCH_SIZE,
        standardize=False,
        progress=False,
        **RECIPES[name],
    )
