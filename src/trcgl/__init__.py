"""trcgl: TRCGL-Net for long-tailed multi-label chest X-ray classification."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trcgl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"


def load(source, device=None):
    """A model folder or hub repository id (``org/name``) ready to predict:
    ``trcgl.load(source).predict(images)`` → a DataFrame (:func:`trcgl.api.load`; imported on
    first use, so ``import trcgl`` stays light)."""
    from trcgl.api import load as _load

    return _load(source, device)
