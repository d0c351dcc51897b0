"""The baseline classifiers of Table 1.

* :class:`TimmClassifier` (``"timm"``): a timm architecture with timm's own pooling and a new
  C-class linear head — ResNet-50 (He et al., "Deep Residual Learning for Image Recognition",
  CVPR 2016), EfficientNet-B0 (Tan & Le, "EfficientNet: Rethinking Model Scaling for
  Convolutional Neural Networks", ICML 2019), ConvNeXt (Liu et al., "A ConvNet for the 2020s",
  CVPR 2022), ConvNeXtV2 (Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with
  Masked Autoencoders", CVPR 2023) and ViT-B/16 (Dosovitskiy et al., "An Image is Worth 16x16
  Words: Transformers for Image Recognition at Scale", ICLR 2021).
* :class:`CSRAClassifier` (``"csra"``): a timm feature map and the class-specific residual
  attention head of Zhu & Wu, "Residual Attention: A Simple but Effective Method for
  Multi-Label Recognition", ICCV 2021 (the official ``CSRA``/``MHA`` modules, re-implemented).
* :class:`CLIPClassifier` (``"clip_linear"``): the open_clip image tower (Radford et al.,
  "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021; Cherti et
  al., "Reproducible scaling laws for contrastive language-image learning", CVPR 2023) and a
  linear probe on its image embedding.

Every constructor takes keyword arguments only; :class:`~trcgl.models.base.Classifier` records
them in ``init_kwargs``. The input normalisation (``mean``/``std``) is resolved from the
pretrained weights' configuration when the model is built and recorded as resolved, so
``load_model`` (which rebuilds with ``pretrained=None``) gives the model back with the
normalisation it was trained with.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from trcgl.errors import ConfigError, DataError
from trcgl.models.backbone import FeatureMap, create_backbone
from trcgl.models.base import CamLayer, Classifier, load_state, register

if TYPE_CHECKING:
    from trcgl.config import ModelConfig
    from trcgl.labels.graph import LabelGraph

Normalization = tuple[tuple[float, ...], tuple[float, ...]]


def _check_classes(classes: Sequence[str]) -> list[str]:
    if isinstance(classes, str) or not classes:
        raise ConfigError("classes must be a non-empty list of class names")
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        dup = sorted({c for c in names if names.count(c) > 1})
        raise ConfigError(f"duplicate class names: {dup}")
    return names


def _resolve_norm(
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    default: tuple[Sequence[float], Sequence[float]],
) -> tuple[list[float], list[float]]:
    """The given (mean, std), else the default; three floats each."""
    m = [float(v) for v in (default[0] if mean is None else mean)]
    s = [float(v) for v in (default[1] if std is None else std)]
    if len(m) != 3 or len(s) != 3 or any(v <= 0 for v in s):
        raise ConfigError(f"mean/std must be 3 values each (std > 0), got mean={m}, std={s}")
    return m, s


def _timm_norm(model: nn.Module) -> tuple[Sequence[float], Sequence[float]]:
    """mean/std of timm's pretrained config for the model (ImageNet's when it has none)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("mean", IMAGENET_DEFAULT_MEAN), cfg.get("std", IMAGENET_DEFAULT_STD)


def _params(modules: Any) -> Iterator[nn.Parameter]:
    if isinstance(modules, nn.Module):
        yield from modules.parameters()
    elif isinstance(modules, tuple | list):
        for m in modules:
            yield from _params(m)


class _NormalizationFromKwargs:
    """Mixin: ``normalization`` read from ``init_kwargs["mean"/"std"]``."""

    init_kwargs: dict[str, Any]

    @property
    def normalization(self) -> Normalization:
        return tuple(self.init_kwargs["mean"]), tuple(self.init_kwargs["std"])


# -- timm with its own head -------------------------------------------------------------------


@register("timm")
class TimmClassifier(_NormalizationFromKwargs, Classifier):
    """A timm architecture with its own global pooling and a new C-class linear head.

    Covers the plain baselines of Table 1: ``resnet50``, ``efficientnet_b0``, ``convnext_tiny``
    (ConvNeXt, Liu et al. 2022), ``convnextv2_tiny`` (ConvNeXtV2 with a linear head, Woo et al.
    2023) and ``vit_base_patch16_224`` (ViT-B/16, Dosovitskiy et al. 2021).

    Args:
        classes: class names (C of them).
        backbone: timm model name.
        pretrained: ``None`` (random init on purpose), ``"hub"``, ``"hf-hub:…"`` or a local
            ``.safetensors`` file; see :mod:`trcgl.models.backbone`.
        drop_path_rate: stochastic depth rate.
        img_size: input size for architectures with a fixed input size (ViT): passed to the
            model's ``set_input_size`` (timm resamples the pretrained position embeddings, as
            it does for ``timm.create_model(..., img_size=…)``). Convolutional networks take
            any size, so for them it is not needed and ignored; an architecture with a fixed
            size that cannot be changed raises :class:`ConfigError`.
        mean, std: input normalisation; ``None``: the timm pretrained config's for the
            architecture (``model.pretrained_cfg``).

    ``forward`` returns ``{"logits": B×C}``; ``return_attention`` is accepted and ignored
    (there is no attention map).
    """

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        classes: list[str],
        graph: LabelGraph | None,
        image_size: int | None,
    ) -> TimmClassifier:
        return cls(
            classes=classes,
            backbone=cfg.backbone,
            pretrained=cfg.pretrained,
            drop_path_rate=cfg.drop_path_rate,
            img_size=image_size,
        )

    def display_name(self) -> str:
        return str(self.init_kwargs["backbone"])

    def __init__(
        self,
        *,
        classes: Sequence[str],
        backbone: str,
        pretrained: str | None = None,
        drop_path_rate: float = 0.0,
        img_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        names = _check_classes(classes)
        model = create_backbone(backbone, pretrained, drop_path_rate, global_pool=None)
        model.reset_classifier(len(names))
        if img_size is not None:
            img_size = int(img_size)
            if hasattr(model, "set_input_size"):
                model.set_input_size(img_size=img_size)
            elif (getattr(model, "pretrained_cfg", None) or {}).get("fixed_input_size"):
                raise ConfigError(
                    f"timm model {backbone!r} has a fixed input size and cannot be built for "
                    f"img_size={img_size}; use the size it was made for or another architecture"
                )
        self.model = model
        norm_mean, norm_std = _resolve_norm(mean, std, _timm_norm(model))
        self.resolved(classes=names, img_size=img_size, mean=norm_mean, std=norm_std)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        embed = getattr(self.model, "patch_embed", None)
        if embed is not None and getattr(embed, "strict_img_size", False):
            wanted = tuple(int(v) for v in embed.img_size)
            got = tuple(int(v) for v in images.shape[-2:])
            if got != wanted:
                raise DataError(
                    f"{self.init_kwargs['backbone']} was built for {wanted[0]}×{wanted[1]} "
                    f"inputs, got {got[0]}×{got[1]}; build it for this size (img_size, which "
                    "training sets from images.size) or resize the images"
                )
        return self.model.forward_features(images)

    def cam_layer(self) -> CamLayer | None:
        """ViTs: the patch tokens entering the last block (its first norm's output)."""
        blocks = getattr(self.model, "blocks", None)
        embed = getattr(self.model, "patch_embed", None)
        if blocks is None or embed is None:
            return None
        grid = tuple(int(v) for v in embed.grid_size)
        return CamLayer(blocks[-1].norm1, int(self.model.num_prefix_tokens), grid)

    def forward_head(
        self, features: torch.Tensor, return_attention: bool = False
    ) -> dict[str, torch.Tensor]:
        return {"logits": self.model.forward_head(features)}

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        head = {id(p) for p in _params(self.model.get_classifier())}
        return (p for p in self.model.parameters() if id(p) not in head)


# -- CSRA -------------------------------------------------------------------------------------

#: The official code's convention: temperature 99 stands for T → ∞, i.e. max pooling.
MAX_POOL_T = 99.0


class CSRAHead(nn.Module):
    """One class-specific residual attention head (Zhu & Wu, ICCV 2021, Eq. 1–6).

    Score maps ``S = W x / ‖w_c‖`` (a 1×1 convolution without bias whose per-class weight
    vectors are normalised in the forward pass, as the official ``CSRA`` module does), base
    logit ``mean_k S_k``, attention logit ``Σ_k softmax(T·S)_k S_k`` (``T = 99``: max over
    positions), logit ``base + λ·att``.
    """

    def __init__(self, in_dim: int, num_classes: int, temperature: float, lam: float) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.lam = float(lam)
        self.conv = nn.Conv2d(in_dim, num_classes, 1, bias=False)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised class score maps, B×C×H×W."""
        w = self.conv.weight  # C×D×1×1
        return self.conv(x) / torch.linalg.vector_norm(w, dim=1, keepdim=True).transpose(0, 1)

    def attention(self, scores: torch.Tensor) -> torch.Tensor:
        """softmax(T·S) over positions, B×C×H×W."""
        b, c, h, w = scores.shape
        return torch.softmax(self.temperature * scores.flatten(2), dim=2).view(b, c, h, w)

    def logit_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(base logit B×C, attention logit B×C, score maps B×C×H×W)."""
        s = self.scores(x)
        flat = s.flatten(2)
        base = flat.mean(dim=2)
        if self.temperature == MAX_POOL_T:
            att = flat.amax(dim=2)
        else:
            att = (torch.softmax(self.temperature * flat, dim=2) * flat).sum(dim=2)
        return base, att, s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base, att, _ = self.logit_terms(x)
        return base + self.lam * att


class MultiHeadCSRA(nn.Module):
    """The official ``MHA`` module: heads with fixed temperature lists, logits summed."""

    TEMPERATURES: ClassVar[dict[int, tuple[float, ...]]] = {
        1: (1,),
        2: (1, 99),
        4: (1, 2, 4, 99),
        6: (1, 2, 3, 4, 5, 99),
        8: (1, 2, 3, 4, 5, 6, 7, 99),
    }

    def __init__(self, in_dim: int, num_classes: int, num_heads: int = 1, lam: float = 0.1):
        super().__init__()
        if num_heads not in self.TEMPERATURES:
            raise ConfigError(
                f"CSRA num_heads must be one of {sorted(self.TEMPERATURES)}, got {num_heads}"
            )
        self.heads = nn.ModuleList(
            CSRAHead(in_dim, num_classes, t, lam) for t in self.TEMPERATURES[num_heads]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([head(x) for head in self.heads]).sum(dim=0)


@register("csra")
class CSRAClassifier(_NormalizationFromKwargs, Classifier):
    """A timm feature map φ(I) and the CSRA head (Zhu & Wu, "Residual Attention: A Simple but
    Effective Method for Multi-Label Recognition", ICCV 2021).

    Args:
        classes: class names (C of them).
        backbone: timm model name of a convolutional network (the head needs a B×D×H×W map;
            ConvNeXt(V2)'s final LayerNorm is applied to the map, see :class:`FeatureMap`).
        pretrained: backbone weights, as for :func:`create_backbone`.
        drop_path_rate: stochastic depth rate.
        num_heads: 1, 2, 4, 6 or 8, with the official temperature lists
            (``{1: [1], 2: [1, 99], 4: [1, 2, 4, 99], 6: [1, 2, 3, 4, 5, 99],
            8: [1, 2, 3, 4, 5, 6, 7, 99]}``; 99 means max pooling).
        lam: λ, the weight of the attention logit (official default 0.1).
        mean, std: input normalisation; ``None``: the timm pretrained config's.

    ``forward`` returns ``{"logits": B×C}`` and, with ``return_attention``, ``"attention"``:
    the softmax maps softmax(T·S) of the first head (T = 1), B×C×H×W.
    """

    @classmethod
    def check_config(cls, cfg: ModelConfig) -> None:
        heads = sorted(MultiHeadCSRA.TEMPERATURES)
        if cfg.csra_heads not in heads:
            raise ConfigError(
                f"model.csra_heads must be one of {', '.join(map(str, heads))}, "
                f"got {cfg.csra_heads}"
            )

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        classes: list[str],
        graph: LabelGraph | None,
        image_size: int | None,
    ) -> CSRAClassifier:
        return cls(
            classes=classes,
            backbone=cfg.backbone,
            pretrained=cfg.pretrained,
            num_heads=cfg.csra_heads,
            lam=cfg.csra_lam,
            drop_path_rate=cfg.drop_path_rate,
        )

    @property
    def has_attention_maps(self) -> bool:
        return True

    def display_name(self) -> str:
        return f"{self.init_kwargs['backbone']} + CSRA"

    def __init__(
        self,
        *,
        classes: Sequence[str],
        backbone: str,
        pretrained: str | None = None,
        drop_path_rate: float = 0.0,
        num_heads: int = 1,
        lam: float = 0.1,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        names = _check_classes(classes)
        if int(num_heads) not in MultiHeadCSRA.TEMPERATURES:
            raise ConfigError(
                f"CSRA num_heads must be one of {sorted(MultiHeadCSRA.TEMPERATURES)}, "
                f"got {num_heads}"
            )
        body = create_backbone(backbone, pretrained, drop_path_rate, global_pool="")
        self.features = FeatureMap(body)
        # FeatureMap reuses ConvNeXt's ``head.norm``; left in the body too, its tensors would be
        # saved twice (safetensors refuses shared tensors). The body's head is never run.
        head = getattr(body, "head", None)
        if head is not None and getattr(head, "norm", None) is self.features.norm:
            head.norm = nn.Identity()
        self.head = MultiHeadCSRA(self.features.num_features, len(names), int(num_heads), lam)
        norm_mean, norm_std = _resolve_norm(mean, std, _timm_norm(body))
        self.resolved(classes=names, mean=norm_mean, std=norm_std)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def forward_head(
        self, x: torch.Tensor, return_attention: bool = False
    ) -> dict[str, torch.Tensor]:
        out = {"logits": self.head(x)}
        if return_attention:
            first = self.head.heads[0]
            out["attention"] = first.attention(first.scores(x))
        return out

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.features.parameters()


# -- CLIP image tower + linear probe ----------------------------------------------------------


def _clip_checkpoint(arch: str, pretrained: str) -> tuple[str, dict[str, Any]]:
    """The weight file for an open_clip tag (downloaded) or a local file, and the tag's cfg."""
    import open_clip

    tag = pretrained
    if tag == "hub":  # the project's "default pretrained weights": OpenAI's where there are
        tags = open_clip.list_pretrained_tags_by_model(arch)
        if "openai" not in tags:
            raise ConfigError(
                f"open_clip {arch!r} has no default ('openai') weights; give one of its tags "
                f"{tags} or a local .safetensors file"
            )
        tag = "openai"
    cfg = open_clip.get_pretrained_cfg(arch, tag)
    if cfg:
        try:
            path = open_clip.download_pretrained(cfg)
        except Exception as exc:
            hub = cfg.get("hf_hub", "")
            if hub:
                repo, filename = os.path.split(hub)
                how = "`" + " ".join(x for x in ("hf download", repo, filename) if x) + "`"
            else:
                how = f"from {cfg.get('url', '?')}"
            raise ConfigError(
                f"could not get open_clip weights {arch!r}/{tag!r} ({type(exc).__name__}: {exc}). "
                f"Download them where there is internet ({how}, or run once with network "
                "access so open_clip caches them in the Hugging Face cache), or give a local "
                ".safetensors file of the CLIP model (or of its image tower) as `pretrained`"
            ) from exc
        if not path:
            raise ConfigError(f"open_clip gave no weight file for {arch!r}/{tag!r}")
        return str(path), cfg
    p = Path(pretrained)
    if p.is_file():
        if p.suffix != ".safetensors":
            raise ConfigError(
                f"{p}: CLIP weights are read from .safetensors files only (no unpickling); "
                "convert with safetensors.torch.save_file(torch.load(f, weights_only=True), out)"
            )
        return str(p), {}
    raise ConfigError(
        f"pretrained {pretrained!r} is neither an open_clip tag of {arch!r} "
        f"(known: {open_clip.list_pretrained_tags_by_model(arch)}) nor an existing file"
    )


@contextmanager
def _quiet_random_init_warning() -> Iterator[None]:
    """Drop open_clip's "initialized randomly" warning: a random init is asked for on purpose
    (``pretrained=None``) or the weights are loaded right after."""

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _load_clip_file(clip: nn.Module, path: str) -> None:
    """Load a full CLIP checkpoint (open_clip's loader: key conversion, position-embedding
    resizing) or, when no key starts with ``visual.``, an image-tower state dict (strictly)."""
    import open_clip
    from safetensors import safe_open

    if path.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt") as f:
                keys = list(f.keys())
        except Exception as exc:
            raise DataError(f"cannot read CLIP weights: {exc}", path=path) from exc
        if not any(k.startswith(("visual.", "module.visual.")) for k in keys):
            load_state(clip.visual, path, what="CLIP image tower")
            return
    try:
        open_clip.load_checkpoint(clip, path, strict=True)
    except Exception as exc:
        raise DataError(
            f"CLIP weights do not fit this open_clip model ({type(exc).__name__}: {exc}); "
            "was the file made for another architecture?",
            path=path,
        ) from exc


@register("clip_linear")
class CLIPClassifier(_NormalizationFromKwargs, Classifier):
    """The open_clip image tower and a linear head on its image embedding (linear-probe /
    fine-tune baseline; Radford et al., ICML 2021; open_clip: Cherti et al., CVPR 2023).

    Args:
        classes: class names (C of them).
        arch: an open_clip model config name (``open_clip.list_models()``), e.g. ``"ViT-B-16"``;
            ``hf-hub:``/``local-dir:`` names are not accepted (they need the hub to rebuild).
        pretrained: ``None`` (random init on purpose), an open_clip tag of ``arch`` (e.g.
            ``"openai"``; downloaded into the Hugging Face cache, so it needs network once),
            ``"hub"`` (= ``"openai"``), or a local ``.safetensors`` file holding either a full
            CLIP state dict (keys ``visual.…``) or the image tower's alone. A tag that cannot be
            had raises :class:`ConfigError` saying how to get it.
        image_size: input size. open_clip towers have a fixed input size (ViT position
            embeddings, ModifiedResNet's attention pool), ``arch``'s own (224 for ViT-B-16)
            unless overridden here: it is passed to ``create_model(..., force_image_size=…)``
            and pretrained position embeddings are interpolated to it. Images of another size
            than the tower's make ``forward`` fail; resize them to it.
        quick_gelu: QuickGELU activations; ``None``: as the tag was trained (``"openai"``
            weights use QuickGELU) or, without a tag, as ``arch``'s config says. Give ``True``
            for an OpenAI checkpoint read from a local file.
        mean, std: input normalisation; ``None``: the tag's, else OpenAI's
            (``open_clip.OPENAI_DATASET_MEAN/STD``).

    ``forward`` returns ``{"logits": B×C}``; ``return_attention`` is accepted and ignored.
    """

    @classmethod
    def from_config(
        cls,
        cfg: ModelConfig,
        classes: list[str],
        graph: LabelGraph | None,
        image_size: int | None,
    ) -> CLIPClassifier:
        return cls(
            classes=classes, arch=cfg.backbone, pretrained=cfg.pretrained, image_size=image_size
        )

    def display_name(self) -> str:
        return f"CLIP ({self.init_kwargs.get('arch')})"

    def __init__(
        self,
        *,
        classes: Sequence[str],
        arch: str = "ViT-B-16",
        pretrained: str | None = None,
        image_size: int | None = None,
        quick_gelu: bool | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        import open_clip

        super().__init__()
        names = _check_classes(classes)
        if arch.startswith(("hf-hub:", "local-dir:")) or arch not in open_clip.list_models():
            raise ConfigError(
                f"unknown open_clip architecture {arch!r}; give a config name from "
                "open_clip.list_models() (e.g. 'ViT-B-16') and the weights as `pretrained`"
            )
        checkpoint, tag_cfg = (
            (None, {}) if pretrained is None else _clip_checkpoint(arch, pretrained)
        )
        arch_quick_gelu = bool(open_clip.get_model_config(arch).get("quick_gelu", False))
        if quick_gelu is None:
            quick_gelu = bool(tag_cfg.get("quick_gelu", arch_quick_gelu))
        extra: dict[str, Any] = {}
        if quick_gelu != arch_quick_gelu:
            extra = {"force_quick_gelu": True} if quick_gelu else {"quick_gelu": False}
        try:
            with _quiet_random_init_warning():
                clip = open_clip.create_model(
                    arch,
                    pretrained=None,
                    force_image_size=image_size,
                    pretrained_image=False,
                    pretrained_text=False,
                    **extra,
                )
        except Exception as exc:
            raise ConfigError(
                f"cannot build open_clip {arch!r}: {type(exc).__name__}: {exc}"
            ) from exc
        if checkpoint is not None:
            _load_clip_file(clip, checkpoint)
        self.visual = clip.visual  # the text tower is dropped
        cfg = open_clip.get_model_config(arch)
        dim = getattr(self.visual, "output_dim", None) or cfg["embed_dim"]
        self.head = nn.Linear(int(dim), len(names))
        norm_mean, norm_std = _resolve_norm(
            mean,
            std,
            (
                tag_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN),
                tag_cfg.get("std", open_clip.OPENAI_DATASET_STD),
            ),
        )
        self.resolved(classes=names, quick_gelu=bool(quick_gelu), mean=norm_mean, std=norm_std)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)  # the tower pools itself: the image embedding B×D

    def cam_layer(self) -> CamLayer:
        """ViT towers: the tokens entering the last residual block; ResNet towers: the last
        stage's feature map (before the attention pool)."""
        transformer = getattr(self.visual, "transformer", None)
        if transformer is None:
            return CamLayer(self.visual.layer4)
        grid = tuple(int(v) for v in self.visual.grid_size)
        batch_first = bool(getattr(transformer, "batch_first", True))
        return CamLayer(transformer.resblocks[-1].ln_1, 1, grid, batch_first)

    def forward_head(
        self, features: torch.Tensor, return_attention: bool = False
    ) -> dict[str, torch.Tensor]:
        return {"logits": self.head(features)}

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        return self.visual.parameters()
