"""diffnb: the helper package of an executable book on diffusion models.

Modules, one job each: ``data`` (mixtures and their exact noised score), ``metrics``,
``sde`` and ``schedules`` (forward processes), ``networks``, ``losses``, ``training``,
``samplers``, ``likelihood``, ``models`` (the one-call path), ``checkpoint`` (saving and
loading its models) and ``plotting``.
"""

from diffnb import (
    checkpoint,
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
    "checkpoint",
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
