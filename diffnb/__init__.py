"""diffnb: the helper package of an executable book on diffusion models.

Modules, one job each: ``data`` (mixtures and their exact noised score), ``digits`` (the 8x8
digits: split, scaling, bits per dimension, density baselines), ``digits_eval`` (their reference
classifier, Frechet distance and memorisation check), ``convnet`` (their small convolutional
network), ``conditional`` (labels, exact classifiers and conditional scores, guided scores),
``metrics``,
``sde`` and ``schedules`` (forward processes), ``networks``, ``losses``, ``training``,
``samplers``, ``denoisers`` and ``solvers`` (few-step sampling), ``preconditioning`` (EDM's
denoiser, noise levels and loss weight), ``likelihood``, ``models`` (the one-call path),
``checkpoint`` (saving and loading its models) and ``plotting``.
"""

from diffnb import (
    checkpoint,
    conditional,
    convnet,
    data,
    denoisers,
    digits,
    digits_eval,
    likelihood,
    losses,
    metrics,
    models,
    networks,
    plotting,
    preconditioning,
    samplers,
    schedules,
    sde,
    solvers,
    training,
)

__all__ = [
    "checkpoint",
    "conditional",
    "convnet",
    "data",
    "denoisers",
    "digits",
    "digits_eval",
    "likelihood",
    "losses",
    "metrics",
    "models",
    "networks",
    "plotting",
    "preconditioning",
    "samplers",
    "schedules",
    "sde",
    "solvers",
    "training",
]
__version__ = "0.1.0"
