"""trcgl: TRCGL-Net for long-tailed multi-label chest X-ray classification."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trcgl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
