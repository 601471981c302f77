"""splat-portrait: one portrait + speech -> a 3D talking head of Gaussian splats.

Data flows ``image/audio -> features -> generator -> splats -> renderer -> video/ply``; each arrow
is one module (see README.md for the map).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("splat-portrait")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["TalkingHeadPipeline", "__version__"]


def __getattr__(name: str):
    # Imported on first use: `splat-portrait --version` and doctor should not pay for torch and onnxruntime.
    if name == "TalkingHeadPipeline":
        from splat_portrait.runtime.talking_head import TalkingHeadPipeline

        return TalkingHeadPipeline
    raise AttributeError(f"module 'splat_portrait' has no attribute {name!r}")
