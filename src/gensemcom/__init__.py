"""gensemcom: generative semantic communication on one diffusion core."""

__version__ = "0.1.0"
