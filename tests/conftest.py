import jax
import pytest

# Silent broadcasting between arrays of different rank is a classic source of wrong numbers.
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(scope="session")
def nine():
    """The nine Gaussians (``data.nine_gaussians``), the mixture most tests check against."""
    from diffnb import data

    return data.nine_gaussians()


@pytest.fixture(scope="session")
def vp_sde():
    """The VP SDE with its default schedule (a process, not a fitted model: test_models.py's
    ``vp`` fixture is a model fitted on it)."""
    from diffnb import sde

    return sde.VPSDE()


@pytest.fixture(scope="session")
def nine_points(nine):
    """1000 draws of the nine Gaussians (key 2024): the likelihood tests' data."""
    from diffnb import data

    return data.sample(jax.random.key(2024), nine, 1000)
