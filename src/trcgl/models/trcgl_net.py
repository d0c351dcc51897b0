"""TRCGL-Net (docs/method.md §2–§3): a timm backbone with channel-class attention and a label GCN.

Forward pass, with the paper's equation numbers:

* Eq. 7: X = φ(I) ∈ R^{D×H×W} (ConvNeXtV2 by default, through its own final norm);
* Eq. 8–10: X_r = X + s·X ⊙ g (``channel_attention``; otherwise X_r = X);
* Eq. 11: s_gap = Linear(GAP(X));
* Eq. 12–13: a_c = softmax_p(Conv1×1(X_r)_c), v_c = Σ_p a_c(p) X_r(p), s_spatial = w_c·v_c + b_c
  (``spatial_attention``);
* Eq. 14: s_img = s_gap + λ s_spatial;
* Eq. 21–24: s_label from a 2-layer GCN over the label graph (``label_gcn``);
* Eq. 25: s = s_img + α s_label.

With all three switches off the model is the plain backbone + GAP + linear head, the
baseline of the ablation (Table 3).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from trcgl.errors import ConfigError, DataError
from trcgl.labels.graph import LabelGraph
from trcgl.models.attention import ChannelReweighting, ClassSpatialAttention
from trcgl.models.backbone import FeatureMap, create_backbone
from trcgl.models.base import Classifier, register
from trcgl.models.label_gcn import LabelGCN

if TYPE_CHECKING:
    from trcgl.config import ModelConfig

GRAPH_FILE = "label_graph.safetensors"


@register("trcgl_net")
class TRCGLNet(Classifier):
    """TRCGL-Net. ``graph`` (the saved label graph) is required when ``label_gcn`` is on and
    must list the same classes in the same order."""

    unsaved_arguments = ("graph",)  # saved as the label-graph buffers, given back by folder_kwargs

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        if cfg.reduction < 1 or cfg.embed_dim < 1 or cfg.hidden_dim < 1:
            raise ConfigError("model.reduction, model.embed_dim and model.hidden_dim must be >= 1")

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        classes: list[str],
        graph: LabelGraph | None,
        image_size: int | None,
    ) -> TRCGLNet:
        return cls(
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
            feature_norm=cfg.feature_norm,
            attention_bias=cfg.attention_bias,
            gcn_dropout=cfg.gcn_dropout,
        )

    @property
    def has_attention_maps(self) -> bool:
        return self.spatial is not None

    def display_name(self) -> str:
        kw = self.init_kwargs
        off = [k for k in ("channel_attention", "spatial_attention", "label_gcn") if not kw[k]]
        suffix = f" w/o {', '.join(off)}" if off else ""
        return f"TRCGL-Net ({kw['backbone']}){suffix}"

    def __init__(
        self,
        *,
        classes: Sequence[str],
        backbone: str = "convnextv2_tiny",
        pretrained: str | None = None,
        graph: LabelGraph | None = None,
        channel_attention: bool = True,
        spatial_attention: bool = True,
        label_gcn: bool = True,
        reduction: int = 16,
        reweight_scale: float = 1.0,
        spatial_class_weights: bool = True,
        lam: float = 0.1,
        alpha: float = 0.05,
        embed_dim: int = 300,
        hidden_dim: int = 1024,
        label_score: Literal["dot", "cosine"] = "dot",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        feature_norm: Literal["head", "batchnorm"] = "head",
        attention_bias: bool = True,
        gcn_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        classes = list(classes)
        self.resolved(classes=classes)
        c = len(classes)
        if feature_norm not in ("head", "batchnorm"):
            raise ConfigError(f"feature_norm must be 'head' or 'batchnorm', not {feature_norm!r}")
        body = create_backbone(backbone, pretrained, drop_path_rate)
        self.features = FeatureMap(body, head_norm=feature_norm == "head")
        d = self.features.num_features
        # The authors' BatchNorm2d on the map: a head parameter (it trains in warm-up too).
        self.feature_norm = nn.BatchNorm2d(d) if feature_norm == "batchnorm" else nn.Identity()
        self.reweight = (
            ChannelReweighting(d, reduction, reweight_scale, attention_bias)
            if channel_attention
            else None
        )
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(d, c)  # Eq. 11
        self.spatial = (
            ClassSpatialAttention(d, c, spatial_class_weights, attention_bias)
            if spatial_attention
            else None
        )
        self.lam = lam
        self.alpha = alpha
        self.gcn: LabelGCN | None = None
        self.graph = graph
        if label_gcn:
            if graph is None:
                raise DataError(
                    "label_gcn needs the label graph (label_graph.safetensors from `trcgl "
                    "prepare`); pass graph=LabelGraph.load(...) or turn label_gcn off"
                )
            if tuple(graph.classes) != tuple(classes):
                raise DataError(
                    "the label graph's classes differ from the model's: "
                    f"graph {list(graph.classes)[:5]}… vs model {classes[:5]}…; rebuild the "
                    "graph from the same manifest (trcgl prepare) or pass matching classes"
                )
            adjacency = torch.from_numpy(np.asarray(graph.adjacency, dtype=np.float32))
            self.gcn = LabelGCN(adjacency, d, embed_dim, hidden_dim, label_score, gcn_dropout)

    # -- parameters -----------------------------------------------------------------------

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.features.parameters()

    # -- forward --------------------------------------------------------------------------

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.feature_norm(self.features(images))  # Eq. 7

    def forward_head(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> dict[str, torch.Tensor]:
        x_r = self.reweight(x) if self.reweight is not None else x  # Eq. 8–10
        s_gap = self.classifier(self.dropout(x.mean(dim=(2, 3))))  # Eq. 11
        out: dict[str, torch.Tensor] = {"s_gap": s_gap}
        s = s_gap
        if self.spatial is not None:
            s_spatial, a = self.spatial(x_r, self.classifier.weight, self.classifier.bias)
            s = s + self.lam * s_spatial  # Eq. 14
            out["s_spatial"] = s_spatial
            if return_attention:
                out["attention"] = a
        if self.gcn is not None:
            s_label = self.gcn(x_r.mean(dim=(2, 3)))  # Eq. 23–24
            s = s + self.alpha * s_label  # Eq. 25
            out["s_label"] = s_label
        out["logits"] = s
        return out

    # -- model folder ---------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> None:
        """config.json, model.safetensors and, with the GCN, label_graph.safetensors."""
        super().save_pretrained(folder)
        if self.graph is not None:
            self.graph.save(Path(folder) / GRAPH_FILE)

    @classmethod
    def folder_kwargs(cls, folder: Path) -> dict[str, Any]:
        path = Path(folder) / GRAPH_FILE
        return {"graph": LabelGraph.load(path)} if path.is_file() else {}
