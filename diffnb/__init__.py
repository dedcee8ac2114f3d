"""diffnb: the helper package of an executable book on diffusion models.

Modules, one job each: ``data`` (mixtures and their exact noised score), ``conditional``
(labels, exact classifiers and conditional scores, guided scores), ``metrics``,
``sde`` and ``schedules`` (forward processes), ``networks``, ``losses``, ``training``,
``samplers``, ``likelihood``, ``models`` (the one-call path) and ``plotting``.
"""

from diffnb import (
    conditional,
    data,
    likelihood,
    losses,
    metrics,
    models,
    networks,
    plotting,
    samplers,
    schedules,
    sde,
    training,
)

__all__ = [
    "conditional",
    "data",
    "likelihood",
    "losses",
    "metrics",
    "models",
    "networks",
    "plotting",
    "samplers",
    "schedules",
    "sde",
    "training",
]
__version__ = "0.1.0"
