"""splat-portrait: one portrait + speech -> a 3D talking head of Gaussian splats.

Data flows ``image/audio -> features -> generator -> splats -> renderer -> video/ply``; each arrow
is one module (see README.md for the map).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("splat-portrait")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
