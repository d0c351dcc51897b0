"""``trcgl explain``: class decision regions (Fig. 4) and prediction confidences (Fig. 5).

Fig. 4 overlays the class-aware spatial attention maps a_c (Eq. 12, softmax over positions)
of the top-k predicted classes on the radiograph, each upsampled bilinearly to the input size
and scaled to its own maximum. Fig. 5 shows the probability of every class, sorted, against
the decision thresholds (0.5, or per-class tuned thresholds when given), true labels marked
when known.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from trcgl.data.images import read_image
from trcgl.evaluation.figures import plot_confidence, plot_regions
from trcgl.evaluation.inference import model_transform
from trcgl.models.base import Classifier


@torch.no_grad()
def attention_and_probabilities(
    model: Classifier, image: np.ndarray, size: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(input image as shown to the model H×W in [0, 1], probabilities C, maps C×H×W or None)."""
    transform = model_transform(model, size)
    x = transform(image)[None]
    out = model.eval()(x, return_attention=True)
    probs = torch.sigmoid(out["logits"].float())[0].numpy()
    shown = x[0, 0].numpy()
    shown = (shown - shown.min()) / max(float(np.ptp(shown)), 1e-8)
    maps = None
    if "attention" in out:
        a = F.interpolate(
            out["attention"].float(), size=shown.shape, mode="bilinear", align_corners=False
        )[0]
        a = a / a.flatten(1).max(dim=1).values.clamp_min(1e-12)[:, None, None]
        maps = a.numpy()
    return shown, probs, maps


def explain_images(
    model: Classifier,
    images: Sequence[str | Path],
    out_dir: str | Path,
    top_k: int = 3,
    thresholds: np.ndarray | None = None,
    labels: dict[str, np.ndarray] | None = None,
) -> list[Path]:
    """Write ``<stem>_regions.png`` (Fig. 4) and ``<stem>_confidence.png`` (Fig. 5) per image."""
    out_dir = Path(out_dir)
    written: list[Path] = []
    for image in images:
        image = Path(image)
        shown, probs, maps = attention_and_probabilities(model, read_image(image))
        truth = None if labels is None else labels.get(image.name)
        if maps is not None:
            path = out_dir / f"{image.stem}_regions.png"
            plot_regions(shown, probs, maps, model.classes, path, top_k, image.name)
            written.append(path)
        else:
            warnings.warn(
                f"{model.architecture} has no class attention maps: Fig. 5 only",
                stacklevel=2,
            )
        path = out_dir / f"{image.stem}_confidence.png"
        plot_confidence(probs, model.classes, path, thresholds, truth, image.name)
        written.append(path)
    return written
