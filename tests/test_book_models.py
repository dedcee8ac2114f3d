"""book_models: the chapters' shared models come from one recipe each, through the build cache."""

import jax
import numpy as np
import pytest

from diffnb import book_models, build_cache, data


def test_the_training_points_are_the_same_in_every_call():
    x = book_models.training_points()
    assert x.shape == (book_models.NUM_POINTS, 2)
    np.testing.assert_array_equal(x, book_models.training_points())
    # Draws of the nine Gaussians: the mean matches the mixture's to the Monte Carlo error.
    mixture = data.nine_gaussians()
    np.testing.assert_allclose(np.mean(x, 0), mixture.weights @ mixture.means, atol=0.03)


@pytest.mark.parametrize("name", book_models.NAMES)
def test_each_model_is_fit_once_with_its_recipe(name, monkeypatch):
    calls = []
    monkeypatch.setattr(build_cache, "load_or_fit", lambda *a, **kw: calls.append((a, kw)))
    book_models.book_model(name)
    (key, x, model), options = calls[0]
    assert model == name and x.shape == (book_models.NUM_POINTS, 2)
    assert options["num_steps"] == 8000 and options["batch_size"] == 512
    assert options["standardize"] is False
    assert {k: options[k] for k in book_models.RECIPES[name]} == book_models.RECIPES[name]
    # The same key for every model: the comparison chapter's keys, where they were first fit.
    np.testing.assert_array_equal(
        jax.random.key_data(key),
        jax.random.key_data(jax.random.split(jax.random.PRNGKey(0), 10)[3]),
    )


def test_an_unknown_model_is_named():
    with pytest.raises(ValueError, match="name must be one of"):
        book_models.book_model("edm")
