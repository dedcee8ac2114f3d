"""diffnb: the helper package of an executable book on diffusion models."""

__version__ = "0.1.0"
