"""Backbones from timm (Eq. 7: X = φ(I)), with pretrained weights from the hub or a file.

``pretrained`` is one of:

* ``None``: random initialisation, on purpose (tests, or weights loaded afterwards);
* ``"hub"``: timm's default pretrained weights for the architecture (downloaded by timm);
* a hub repository, ``"hf-hub:timm/convnextv2_tiny.fcmae_ft_in22k_in1k"`` or the same without
  the ``hf-hub:`` prefix; a ``timm/<arch>.<tag>`` repository must match the backbone's
  architecture (checked before any download), any repository after it is built;
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
    tag = hub_tag(name, pretrained)
    if tag is None:
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_backbone_weights(model, pretrained)
        return model
    _check_architecture(name, tag)
    try:
        model = timm.create_model(tag, pretrained=True, **kwargs)
    except Exception as exc:
        raise ConfigError(_hub_failure(pretrained, tag, exc)) from exc
    built = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if built and _arch(built) != _arch(name):
        raise ConfigError(
            f"model.pretrained={pretrained!r} holds a {built!r} but model.backbone is {name!r}; "
            f"set model.backbone={built}"
        )
    return model


def hub_tag(name: str, pretrained: str) -> str | None:
    """What timm is asked to build for a ``model.pretrained`` value; ``None`` for a local file.

    * ``hub``: timm's default weights of ``name`` (``convnextv2_tiny`` or a tagged
      ``convnextv2_tiny.fcmae_ft_in22k_in1k``);
    * ``hf-hub:org/name``: that Hugging Face Hub repository, as given;
    * ``org/name`` (e.g. ``timm/convnextv2_tiny.fcmae_ft_in22k_in1k``) that is not a local
      file: the same as ``hf-hub:org/name``.
    """
    if pretrained == "hub":
        return name
    if pretrained.startswith("hf-hub:"):
        return pretrained
    looks_like_repo = pretrained.count("/") == 1 and not pretrained.startswith((".", "/", "~"))
    if (
        looks_like_repo
        and not pretrained.endswith(".safetensors")
        and not Path(pretrained).exists()
    ):
        return f"hf-hub:{pretrained}"
    return None


def _arch(name: str) -> str:
    """``convnextv2_tiny.fcmae_ft_in1k`` → ``convnextv2_tiny``."""
    return name.split(".", 1)[0]


def _check_architecture(name: str, tag: str) -> None:
    """A ``timm/<arch>.<tag>`` repository names its architecture: it must be the backbone's."""
    repo = tag.removeprefix("hf-hub:")
    org, _, model = repo.partition("/")
    if org == "timm" and model and _arch(model) != _arch(name):
        raise ConfigError(
            f"model.pretrained={repo!r} is a {_arch(model)!r} but model.backbone is {name!r}; "
            f"set model.backbone={_arch(model)} (or choose weights of {_arch(name)})"
        )


def _hub_failure(pretrained: str, tag: str, exc: Exception) -> str:
    """Why ``timm.create_model(tag, pretrained=True)`` failed, in words that fit the cause."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    what = (
        f"could not get pretrained weights for model.pretrained={pretrained!r} "
        f"(timm.create_model({tag!r}, pretrained=True))"
    )
    repo = tag.removeprefix("hf-hub:")
    if not tag.startswith("hf-hub:"):  # "hub": timm's default weights of the architecture
        cfg = timm.models.get_pretrained_cfg(tag)
        repo = (cfg.hf_hub_id if cfg is not None else None) or f"timm/{tag}"
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__cause__ or e.__context__
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, RuntimeError) and (
        "state_dict" in str(exc) or "size mismatch" in str(exc) or "Missing key" in str(exc)
    ):
        return f"{what}: the weights do not fit the architecture ({detail})"
    if any(isinstance(c, GatedRepoError) for c in chain):
        return (
            f"{what}: the repository is gated; accept its terms on the hub and log in "
            f"(`hf auth login`) ({detail})"
        )
    if any(isinstance(c, LocalEntryNotFoundError) for c in chain) or constants.HF_HUB_OFFLINE:
        return (
            f"{what}: the weights are not in the local hub cache and downloads are off "
            f"(HF_HUB_OFFLINE={int(constants.HF_HUB_OFFLINE)}, or no network). Fetch them once "
            f"where there is internet (`hf download {repo}`, or run once online so timm caches "
            f"them), or give a local .safetensors file as model.pretrained ({detail})"
        )
    if any(isinstance(c, RepositoryNotFoundError | EntryNotFoundError) for c in chain):
        return (
            f"{what}: no such repository or weight file on the hub; check the name "
            f"(e.g. hf-hub:timm/convnextv2_tiny.fcmae_ft_in22k_in1k) ({detail})"
        )
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return (
            f"{what}: could not download the weights ({detail}); check the network, or fetch "
            "them where there is internet and give a local .safetensors file"
        )
    return f"{what}: {detail}"


class FeatureMap(nn.Module):
    """φ(I): the backbone's feature map, through its own final norm when it has one.

    timm ConvNeXt(V2) keeps its last LayerNorm in the classifier head (``head.norm``); it is
    pretrained with the backbone, so it is applied here to the map, before any head. With
    ``head_norm=False`` it is dropped (the map of ``forward_features``, as the authors' code
    takes it, ``global_pool=""``).
    """

    def __init__(self, backbone: nn.Module, head_norm: bool = True) -> None:
        super().__init__()
        self.body = backbone
        head = getattr(backbone, "head", None)
        norm = getattr(head, "norm", None)
        if isinstance(norm, nn.Module):
            head.norm = nn.Identity()  # moved here, so that it is held (and saved) once
            self.norm = norm if head_norm else nn.Identity()
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
