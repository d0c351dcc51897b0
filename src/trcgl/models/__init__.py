"""Models: backbones, channel-class attention (Eq. 7–14), label GCN (Eq. 21–25), TRCGL-Net,
baselines and losses."""

# Importing the architecture modules registers them (``@register``), so that a model folder of
# any shipped architecture loads as soon as ``trcgl.models`` (or any module in it) is imported.
from trcgl.models import baselines as _baselines  # noqa: F401
from trcgl.models.base import Classifier, load_model
from trcgl.models.trcgl_net import TRCGLNet

__all__ = ["Classifier", "TRCGLNet", "load_model"]
