import jax
import pytest

# Silent broadcasting between arrays of different rank is a classic source of wrong numbers.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def nine():
    from diffnb import data

    return data.nine_gaussians()
