"""Saving and loading a ``models.FittedModel``: one portable ``.npz`` file, no pickled code.

The file holds a JSON header (array ``"header"``, UTF-8 bytes) with the configuration: the
model, the network's ``NetworkConfig`` (or ``null`` for a network of the user's own), the
process's class and fields, the time scale, the number of training points and the paths of
the parameter leaves; and the arrays: ``params/<i>`` (the leaves, in the header's order),
``shift``, ``scale``, ``losses`` and, for the discrete schedules, ``process/<field>``. Every
array is stored as it is, so a loaded model computes bit-identical samples; the file is read
with ``allow_pickle=False``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np

from diffnb import denoisers, networks, schedules, sde
from diffnb.models import FittedModel

__all__ = ["FORMAT", "save", "load"]

FORMAT = "diffnb.FittedModel/1"
_SDES = {cls.__name__: cls for cls in (sde.VPSDE, sde.SubVPSDE, sde.VESDE, denoisers.EDMProcess)}
_SCHEDULES = {cls.__name__: cls for cls in (schedules.DDPMSchedule, schedules.NCSNSchedule)}


def _flatten(params, prefix=()):
    """[(path, leaf)] of a nested dict of arrays (Haiku's parameter layout)."""
    if isinstance(params, dict):
        items = []
        for name in params:
            if not isinstance(name, str):
                raise ValueError(f"params must be nested dicts with string keys, got {name!r}")
            items += _flatten(params[name], (*prefix, name))
        return items
    if not hasattr(params, "shape"):
        raise ValueError(
            f"params must be nested dicts of arrays (as Haiku's), got {type(params).__name__}"
        )
    return [(list(prefix), params)]


def _unflatten(paths, leaves):
    params = {}
    for path, leaf in zip(paths, leaves, strict=True):
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = leaf
    return params


def save(path, fitted: FittedModel) -> str:
    """Write ``fitted`` to ``path`` (``.npz`` appended if missing); returns the file's path."""
    if not isinstance(fitted, FittedModel):
        raise ValueError(f"fitted must be a FittedModel, got {type(fitted).__name__}")
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    items = _flatten(fitted.params)
    arrays = {f"params/{i}": np.asarray(leaf) for i, (_, leaf) in enumerate(items)}
    process = fitted.process
    if isinstance(process, sde.SDE):
        proc = {"type": type(process).__name__, "fields": dataclasses.asdict(process)}
    else:
        proc = {"type": type(process).__name__, "fields": list(process._fields)}
        arrays.update({f"process/{k}": np.asarray(v) for k, v in process._asdict().items()})
    network = fitted.network
    header = {
        "format": FORMAT,
        "model": fitted.model,
        "network": (
            dataclasses.asdict(network) if isinstance(network, networks.NetworkConfig) else None
        ),
        "process": proc,
        "time_scale": fitted.time_scale,
        "num_points": fitted.num_points,
        "scale_is_float": isinstance(fitted.scale, float),
        "params": [p for p, _ in items],
    }
    arrays.update(
        shift=np.asarray(fitted.shift),
        scale=np.asarray(fitted.scale, np.float64 if header["scale_is_float"] else None),
        losses=np.asarray(fitted.losses),
        header=np.frombuffer(json.dumps(header).encode(), np.uint8),
    )
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def load(path, network=None) -> FittedModel:
    """Read a model written by ``save``. ``network``: the Haiku network of a custom model."""
    with np.load(os.fspath(path), allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    if "header" not in arrays:
        raise ValueError(f"path {path!r} is not a diffnb model file: it has no header")
    header = json.loads(arrays["header"].tobytes().decode())
    if header.get("format") != FORMAT:
        raise ValueError(f"path {path!r} has format {header.get('format')!r}, not {FORMAT!r}")
    if header["network"] is not None:
        if network is not None:
            raise ValueError("network must be left out: the file holds its NetworkConfig")
        config = dict(header["network"])
        config["hidden_dims"] = tuple(config["hidden_dims"])
        network = networks.NetworkConfig(**config)
    elif network is None:
        raise ValueError("network must be given: the model was saved with a network of its own")
    proc = header["process"]
    if proc["type"] in _SDES:
        process = _SDES[proc["type"]](**proc["fields"])
    elif proc["type"] in _SCHEDULES:
        fields = {k: jnp.asarray(arrays[f"process/{k}"]) for k in proc["fields"]}
        process = _SCHEDULES[proc["type"]](**fields)
    else:
        raise ValueError(f"path {path!r} has an unknown process {proc['type']!r}")
    leaves = [jnp.asarray(arrays[f"params/{i}"]) for i in range(len(header["params"]))]
    scale = arrays["scale"]
    scale = float(scale) if header["scale_is_float"] else jnp.asarray(scale)
    return FittedModel(
        header["model"],
        _unflatten(header["params"], leaves),
        network,
        process,
        jnp.asarray(arrays["shift"]),
        scale,
        jnp.asarray(arrays["losses"]),
        float(header["time_scale"]),
        int(header["num_points"]),
    )
