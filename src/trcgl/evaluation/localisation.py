"""Do the class maps point at the lesion? Pointing game and mass inside radiologist boxes.

For an image with radiologist boxes of class c (:mod:`trcgl.data.boxes`: NIH's
``BBox_List_2017``), the class map m_c is scored against the union B_c of its class-c boxes:

* **the map**: TRCGL-Net's class-aware spatial attention a_c (Eq. 12) or CSRA's class
  attention, where the model has one (``"attention"``); otherwise **Grad-CAM** (Selvaraju et
  al., ICCV 2017) of the class logit s_c at the backbone's feature map (for ViT / CLIP towers,
  the patch tokens entering the last block, laid out on their grid), computed by captum's
  ``LayerGradCam`` with ReLU (``"gradcam"``). Either is upsampled bilinearly to the model's
  input size, as Fig. 4 draws it;
* **pointing game** (Zhang et al., ECCV 2016; strict, no tolerance margin): a hit when the
  arg max of m_c lies in B_c;
* **mass inside**: Σ_{p ∈ B_c} m_c(p) / Σ_p m_c(p) (m_c ≥ 0; an all-zero Grad-CAM map has no
  arg max inside and no mass: a miss, 0);
* **chance**: |B_c| / |image|, what both scores are for a map that is uniform (mass) or points
  at random (pointing): a score means something only above it.

A pixel is inside a box when its centre is. :func:`localisation_scores` gives the scores per
class (images with a class-c box, pointing accuracy, mean mass, mean chance) and overall
(macro over the classes with boxes, and pooled over all image-class pairs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from trcgl.errors import ConfigError
from trcgl.models.base import CamLayer, Classifier

__all__ = [
    "METHODS",
    "box_mask",
    "class_maps",
    "localisation_scores",
    "map_method",
    "mass_inside",
    "pointing_hit",
]

METHODS = ("attention", "gradcam")


def box_mask(boxes: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """H×W boolean mask of the union of ``boxes`` (k×4: x0, y0, x1, y1 as image fractions):
    the pixels whose centre lies in a box."""
    h, w = (size, size) if isinstance(size, int) else size
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    mask = np.zeros((h, w), dtype=bool)
    for x0, y0, x1, y1 in np.asarray(boxes, dtype=float).reshape(-1, 4):
        rows = (ys >= y0) & (ys <= y1)
        cols = (xs >= x0) & (xs <= x1)
        mask |= rows[:, None] & cols[None, :]
    return mask


def pointing_hit(m: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the arg max of the map ``m`` (first one in row-major order) lies in ``mask``;
    an all-zero map points nowhere."""
    if not np.any(m > 0):
        return False
    return bool(mask.reshape(-1)[int(np.argmax(m))])


def mass_inside(m: np.ndarray, mask: np.ndarray) -> float:
    """Σ_{mask} m / Σ m for a non-negative map (0 for an all-zero map)."""
    total = float(m.sum())
    return float(m[mask].sum()) / total if total > 0 else 0.0


def map_method(model: Classifier, method: str = "auto") -> str:
    """``auto``: the model's own class attention where it has one, else Grad-CAM."""
    if method not in ("auto", *METHODS):
        raise ConfigError(f"unknown map method {method!r}; known: auto, {', '.join(METHODS)}")
    if method != "auto":
        return method
    return "attention" if getattr(model, "has_attention_maps", False) else "gradcam"


class _View(nn.Identity):
    """The module Grad-CAM reads: the feature map passes through it unchanged."""


def _gradcam(model: Classifier, images: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    from captum.attr import LayerGradCam

    view = _View()
    layer: CamLayer | None = model.cam_layer()
    hook = None
    if layer is None:

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model.forward_head(view(model.forward_features(x)))["logits"]

    else:

        def reroute(module: nn.Module, args: Any, out: torch.Tensor) -> torch.Tensor:
            if layer.prefix is None:
                return view(out)
            tokens = out if layer.batch_first else out.transpose(0, 1)
            b, _, d = tokens.shape
            h, w = layer.grid
            patches = tokens[:, layer.prefix :].transpose(1, 2).reshape(b, d, h, w)
            patches = view(patches).reshape(b, d, h * w).transpose(1, 2)
            tokens = torch.cat([tokens[:, : layer.prefix], patches], dim=1)
            return tokens if layer.batch_first else tokens.transpose(0, 1)

        hook = layer.module.register_forward_hook(reroute)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model(x)["logits"]

    try:
        with torch.enable_grad():
            cam = LayerGradCam(forward, view).attribute(
                images, target=list(map(int, targets)), relu_attributions=True
            )
    finally:
        if hook is not None:
            hook.remove()
    return cam[:, 0].detach()


@torch.no_grad()
def _attention(model: Classifier, images: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    maps = model(images, return_attention=True).get("attention")
    if maps is None:
        raise ConfigError(f"{model.display_name()} has no class attention maps; use gradcam")
    return maps[torch.arange(len(targets)), torch.as_tensor(list(targets))]


def class_maps(
    model: Classifier, images: torch.Tensor, targets: Sequence[int], method: str = "auto"
) -> np.ndarray:
    """The map of class ``targets[i]`` on ``images[i]`` (B×3×S×S, normalised model inputs),
    upsampled bilinearly to S×S: B×S×S, float64, ≥ 0. ``method``: see :func:`map_method`."""
    model.eval()
    how = map_method(model, method)
    maps = (_attention if how == "attention" else _gradcam)(model, images, targets)
    maps = F.interpolate(
        maps[:, None].float(), size=images.shape[-2:], mode="bilinear", align_corners=False
    )[:, 0]
    return maps.clamp_min(0).double().cpu().numpy()


def localisation_scores(
    pairs: pd.DataFrame, classes: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-class and overall scores from one row per scored (image, class) pair with columns
    ``class``, ``hit`` (bool), ``mass`` and ``chance``. Classes without boxes are left out."""
    per_class = []
    for name in classes:
        rows = pairs[pairs["class"] == name]
        if len(rows) == 0:
            continue
        per_class.append(
            {
                "class": name,
                "images": len(rows),
                "pointing": float(rows["hit"].mean()),
                "mass_inside": float(rows["mass"].mean()),
                "chance": float(rows["chance"].mean()),
            }
        )
    table = pd.DataFrame(
        per_class, columns=["class", "images", "pointing", "mass_inside", "chance"]
    )
    overall: dict[str, Any] = {"classes": len(table), "pairs": len(pairs)}
    if len(table):
        for key in ("pointing", "mass_inside", "chance"):
            overall[f"macro_{key}"] = float(table[key].mean())
        overall["pooled_pointing"] = float(pairs["hit"].mean())
        overall["pooled_mass_inside"] = float(pairs["mass"].mean())
        overall["pooled_chance"] = float(pairs["chance"].mean())
    return table, overall


def localise(
    model: Classifier,
    dataset: Any,
    image_ids: Sequence[str],
    boxes: pd.DataFrame,
    *,
    method: str = "auto",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
) -> pd.DataFrame:
    """Score the class maps of every (image, class) pair with a box: one row per pair with
    ``image_id``, ``class``, ``hit``, ``mass`` and ``chance``. ``dataset[i]["image"]`` is the
    model input of ``image_ids[i]``; ``boxes`` a box table (classes outside the model's are
    skipped)."""
    position = {str(i): n for n, i in enumerate(image_ids)}
    index = {c: j for j, c in enumerate(model.classes)}
    boxes = boxes[boxes["image_id"].isin(position.keys()) & boxes["class"].isin(index.keys())]
    groups = sorted(boxes.groupby(["image_id", "class"]), key=lambda g: position[g[0][0]])
    model = model.to(device).eval()
    rows: list[dict[str, Any]] = []
    for start in range(0, len(groups), batch_size):
        chunk = groups[start : start + batch_size]
        images = torch.stack([dataset[position[i]]["image"] for (i, _), _ in chunk]).to(device)
        maps = class_maps(model, images, [index[c] for (_, c), _ in chunk], method)
        for m, ((image_id, name), b) in zip(maps, chunk, strict=True):
            mask = box_mask(b[["x0", "y0", "x1", "y1"]].to_numpy(), m.shape)
            rows.append(
                {
                    "image_id": image_id,
                    "class": name,
                    "hit": pointing_hit(m, mask),
                    "mass": mass_inside(m, mask),
                    "chance": float(mask.mean()),
                }
            )
    return pd.DataFrame(rows, columns=["image_id", "class", "hit", "mass", "chance"])
