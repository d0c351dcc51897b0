"""Models: backbones, channel-class attention (Eq. 7–14), label GCN (Eq. 21–25), TRCGL-Net,
baselines and losses."""

from trcgl.models.base import Classifier, load_model
from trcgl.models.trcgl_net import TRCGLNet

__all__ = ["Classifier", "TRCGLNet", "load_model"]
