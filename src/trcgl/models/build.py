"""Build the configured classifier."""

from __future__ import annotations

from collections.abc import Sequence

from trcgl.config import ModelConfig
from trcgl.labels.graph import LabelGraph
from trcgl.models.base import Classifier
from trcgl.registry import ARCHITECTURES


def build_model(
    cfg: ModelConfig,
    classes: Sequence[str],
    graph: LabelGraph | None,
    image_size: int | None = None,
) -> Classifier:
    """The registered architecture ``cfg.architecture`` (TRCGL-Net or a Table 1 baseline), built
    by its ``from_config`` from the ``model`` config section.

    ``image_size`` is passed to the baselines with a fixed input size (ViT, CLIP); the
    convolutional ones ignore it.
    """
    cls: type[Classifier] = ARCHITECTURES.get(cfg.architecture)
    return cls.from_config(cfg, list(classes), graph, image_size)
