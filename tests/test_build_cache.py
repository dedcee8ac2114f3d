"""build_cache.load_or_fit: one fit per recipe and build, the same numbers as models.fit."""

import os

import jax
import numpy as np
import pytest

from diffnb import build_cache, data, models, networks

TINY = networks.NetworkConfig(hidden_dims=(16,), embedding_dim=8)
OPTIONS = {"num_steps": 5, "batch_size": 16, "network": TINY, "progress": False}


@pytest.fixture(scope="module")
def x(nine):
    return data.sample(jax.random.key(1), nine, 64)


def _samples(fitted):
    return np.asarray(models.sample(jax.random.key(2), fitted, 8, "ode").samples)


def test_without_a_store_it_is_fit(x, monkeypatch):
    monkeypatch.delenv(build_cache.STORE_VARIABLE, raising=False)
    calls = []
    monkeypatch.setattr(models, "fit", lambda *args, **kwargs: calls.append((args, kwargs)))
    build_cache.load_or_fit(jax.random.key(0), x, "vp", **OPTIONS)
    build_cache.load_or_fit(jax.random.key(0), x, "vp", **OPTIONS)
    assert len(calls) == 2 and calls[0][1] == OPTIONS and calls[0][0][2] == "vp"


def test_the_first_call_fits_and_the_next_ones_load(x, monkeypatch, tmp_path):
    monkeypatch.setenv(build_cache.STORE_VARIABLE, str(tmp_path))
    direct = models.fit(jax.random.key(0), x, "vp", **OPTIONS)
    first = build_cache.load_or_fit(jax.random.key(0), x, "vp", **OPTIONS)
    np.testing.assert_array_equal(first.losses, direct.losses)
    saved = sorted(p.name for p in tmp_path.glob("*.npz"))
    assert len(saved) == 1 and saved[0].startswith("vp-")
    stamp = os.stat(tmp_path / saved[0]).st_mtime_ns
    second = build_cache.load_or_fit(jax.random.key(0), x, "vp", **OPTIONS)
    assert os.stat(tmp_path / saved[0]).st_mtime_ns == stamp  # loaded, not trained again
    np.testing.assert_array_equal(second.losses, direct.losses)
    np.testing.assert_array_equal(_samples(second), _samples(direct))
    build_cache.load_or_fit(jax.random.key(1), x, "vp", **OPTIONS)  # another key: a new fit
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_the_recipe_hash_follows_the_inputs(x):
    key = jax.random.key(0)
    base = build_cache.recipe_hash(key, x, "vp", OPTIONS)
    assert base == build_cache.recipe_hash(jax.random.key(0), np.asarray(x), "vp", dict(OPTIONS))
    wider = {**OPTIONS, "network": networks.NetworkConfig(hidden_dims=(17,), embedding_dim=8)}
    assert base != build_cache.recipe_hash(key, x, "vp", wider)
    assert base != build_cache.recipe_hash(key, x.at[0, 0].add(1e-6), "vp", OPTIONS)
    assert base != build_cache.recipe_hash(jax.random.key(1), x, "vp", OPTIONS)
    assert base != build_cache.recipe_hash(key, x, "subvp", OPTIONS)
    assert base != build_cache.recipe_hash(key, x, "vp", {**OPTIONS, "num_steps": 6})


def test_what_cannot_be_keyed_is_named(x, monkeypatch, tmp_path):
    monkeypatch.setenv(build_cache.STORE_VARIABLE, str(tmp_path))
    for name in ("resume", "init_params"):
        with pytest.raises(ValueError, match=name):
            build_cache.load_or_fit(jax.random.key(0), x, "vp", **{name: {}}, **OPTIONS)
    with pytest.raises(TypeError, match="object"):
        build_cache.recipe_hash(jax.random.key(0), x, "vp", {"optimizer": object()})
