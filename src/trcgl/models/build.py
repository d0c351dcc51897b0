"""Build the configured classifier."""

from __future__ import annotations

from collections.abc import Sequence

from trcgl.config import ModelConfig
from trcgl.labels.graph import LabelGraph
from trcgl.models.base import Classifier


def build_model(
    cfg: ModelConfig,
    classes: Sequence[str],
    graph: LabelGraph | None,
    image_size: int | None = None,
) -> Classifier:
    """TRCGL-Net or one of the Table 1 baselines, from the ``model`` config section.

    ``image_size`` is passed to the baselines with a fixed input size (ViT, CLIP); the
    convolutional ones ignore it.
    """
    classes = list(classes)
    if cfg.architecture == "trcgl_net":
        from trcgl.models.trcgl_net import TRCGLNet

        return TRCGLNet(
            classes=classes,
            backbone=cfg.backbone,
            pretrained=cfg.pretrained,
            graph=graph if cfg.label_gcn else None,
            channel_attention=cfg.channel_attention,
            spatial_attention=cfg.spatial_attention,
            label_gcn=cfg.label_gcn,
            reduction=cfg.reduction,
            reweight_scale=cfg.reweight_scale,
            spatial_class_weights=cfg.spatial_class_weights,
            lam=cfg.lam,
            alpha=cfg.alpha,
            embed_dim=cfg.embed_dim,
            hidden_dim=cfg.hidden_dim,
            label_score=cfg.label_score,
            drop_rate=cfg.drop_rate,
            drop_path_rate=cfg.drop_path_rate,
        )
    from trcgl.models import baselines

    if cfg.architecture == "timm":
        return baselines.TimmClassifier(
            classes=classes,
            backbone=cfg.backbone,
            pretrained=cfg.pretrained,
            drop_path_rate=cfg.drop_path_rate,
            img_size=image_size,
        )
    if cfg.architecture == "csra":
        return baselines.CSRAClassifier(
            classes=classes,
            backbone=cfg.backbone,
            pretrained=cfg.pretrained,
            num_heads=cfg.csra_heads,
            lam=cfg.csra_lam,
            drop_path_rate=cfg.drop_path_rate,
        )
    return baselines.CLIPClassifier(
        classes=classes, arch=cfg.backbone, pretrained=cfg.pretrained, image_size=image_size
    )
