"""rmt_engine: random-matrix Monte Carlo for the bounds of Subquadratic Overparameterization (NeurIPS 2021)."""

from ._version import __version__

__all__ = ["__version__"]
