"""embedrank: fast, correct embedding retrieval.

The native kernels live in :mod:`embedrank.kernels`.
"""

from embedrank import kernels

__version__ = "0.1.0"

__all__ = ["kernels", "__version__"]
