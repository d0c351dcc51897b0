"""Backbones from timm (Eq. 7: X = φ(I)), with pretrained weights from the hub or a file.

``pretrained`` is one of:

* ``None``: random initialisation, on purpose (tests, or weights loaded afterwards);
* ``"hub"``: timm's default pretrained weights for the architecture (downloaded by timm);
* a hub tag such as ``"hf-hub:timm/convnextv2_tiny.fcmae_ft_in22k_in1k"``;
* a path to a local ``.safetensors`` file. Keys may carry a ``backbone.``, ``model.``,
  ``module.`` or ``encoder.`` prefix (as in the CXR-LT 2026 task-1 weights); classifier-head
  keys are ignored. Every backbone weight must be present, else the error lists what is missing.

A weight that cannot be had is an error that says how to get it, never a silent random init.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from torch import nn

from trcgl.errors import ConfigError, DataError

PREFIXES = ("module.", "backbone.", "model.", "encoder.")


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def load_backbone_weights(model: nn.Module, path: str | Path) -> None:
    """Load a local safetensors file into a timm backbone built without a classifier."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"backbone weight file not found: {path}")
    if path.suffix != ".safetensors":
        raise ConfigError(
            f"{path}: backbone weights are read from .safetensors files only (no unpickling); "
            "convert with safetensors.torch.save_file(torch.load(f, weights_only=True), out)"
        )
    try:
        raw = load_file(str(path))
    except Exception as exc:
        raise DataError(f"cannot read backbone weights: {exc}", path=path) from exc
    state = {_strip(k): v for k, v in raw.items()}
    own = model.state_dict()
    wanted = {k: v for k, v in state.items() if k in own}
    missing = sorted(set(own) - set(wanted))
    wrong = [k for k in wanted if wanted[k].shape != own[k].shape]
    if missing or wrong or not wanted:
        raise DataError(
            "backbone weights do not fit "
            f"{type(model).__name__}: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(wrong)} of another shape (e.g. {wrong[:3]}); is it the same architecture?",
            path=path,
        )
    model.load_state_dict(wanted, strict=False)


def create_backbone(
    name: str,
    pretrained: str | None = None,
    drop_path_rate: float = 0.0,
    global_pool: str = "",
) -> nn.Module:
    """A timm model without classifier (``num_classes=0``).

    With the default ``global_pool=""`` it does not pool either, so ``forward_features`` gives
    the B×D×H×W map; baselines that keep timm's own pooled head pass ``global_pool="avg"``
    (or the architecture's default, ``None``) and call ``reset_classifier``.
    """
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm backbone {name!r}")
    kwargs = {"num_classes": 0, "drop_path_rate": drop_path_rate}
    if global_pool is not None:
        kwargs["global_pool"] = global_pool
    if pretrained is None:
        return timm.create_model(name, pretrained=False, **kwargs)
    if pretrained == "hub" or pretrained.startswith("hf-hub:") or pretrained.startswith("timm/"):
        arch = name if pretrained == "hub" else pretrained.removeprefix("hf-hub:")
        try:
            return timm.create_model(arch, pretrained=True, **kwargs)
        except Exception as exc:
            raise ConfigError(
                f"could not get pretrained weights for {arch!r} ({type(exc).__name__}: {exc}). "
                "Download them where there is internet (e.g. `hf download timm/<model>`, or "
                "run once with network access so timm caches them), or give a local "
                ".safetensors file as the backbone weights"
            ) from exc
    model = timm.create_model(name, pretrained=False, **kwargs)
    load_backbone_weights(model, pretrained)
    return model


class FeatureMap(nn.Module):
    """φ(I): the backbone's feature map, through its own final norm when it has one.

    timm ConvNeXt(V2) keeps its last LayerNorm in the classifier head (``head.norm``); it is
    pretrained with the backbone, so it is applied here to the map, before any head.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.body = backbone
        head = getattr(backbone, "head", None)
        norm = getattr(head, "norm", None)
        if isinstance(norm, nn.Module):
            head.norm = nn.Identity()  # moved here, so that it is held (and saved) once
            self.norm = norm
        else:
            self.norm = nn.Identity()
        self.num_features = int(backbone.num_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.body.forward_features(images)
        if x.ndim != 4:
            raise ConfigError(
                f"backbone {type(self.body).__name__} gives a {x.ndim}-D output, not a feature "
                "map; TRCGL-Net needs a convolutional backbone (ConvNeXt, ResNet, EfficientNet…)"
            )
        return self.norm(x)
