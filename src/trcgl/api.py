"""The Python entry point: ``trcgl.load(folder)`` → a :class:`Predictor`.

    import trcgl
    model = trcgl.load("runs/demo/model")
    table = model.predict(["a.png", "b.dcm"], binary=True)

A :class:`Predictor` is a model folder ready for inference: the classifier, the input path it
was trained with (size, normalisation; :class:`~trcgl.evaluation.inference.ModelInput`) and
the decisions the folder keeps (``decisions.json``: per-class thresholds tuned on validation).
It takes image files (PNG, JPEG, TIFF, 16-bit PNG, DICOM), PIL images and arrays of any size
and channel count, and returns one row per image. This module sits beside the command line,
above the libraries it uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trcgl.data.images import read_image
from trcgl.errors import DataError
from trcgl.evaluation.inference import binary_columns, model_transform, probabilities
from trcgl.models.base import DECISIONS_FILE, Classifier, load_model

__all__ = ["Predictor", "load"]


def _as_array(item: Any) -> np.ndarray:
    if isinstance(item, str | Path):
        return read_image(item)
    if hasattr(item, "mode") and hasattr(item, "size"):  # a PIL image
        return np.asarray(item)
    if isinstance(item, np.ndarray | torch.Tensor):
        return np.asarray(item)
    raise DataError(f"cannot predict on a {type(item).__name__}: give paths, PIL images or arrays")


def _name(item: Any, i: int) -> str:
    return str(item) if isinstance(item, str | Path) else f"image {i}"


class Predictor:
    """A loaded model folder (see the module docstring)."""

    def __init__(self, model: Classifier, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.transform = model_transform(model)

    @property
    def classes(self) -> tuple[str, ...]:
        return self.model.classes

    @property
    def thresholds(self) -> dict[str, float] | None:
        """Per-class thresholds tuned on validation (``decisions.json``), if the folder has them."""
        return (self.model.decisions or {}).get("thresholds")

    @torch.no_grad()
    def predict(
        self,
        images: Any,
        *,
        binary: bool = False,
        tta: str | None = None,
        batch_size: int = 32,
    ) -> pd.DataFrame:
        """Probabilities for ``images`` (one path, PIL image or array, or a sequence of them):
        a column ``image`` (the path, or ``image <i>``) and one per class; with ``binary``, the
        0/1 columns ``pred:<class>`` at the tuned thresholds; ``tta="hflip"`` averages each
        image with its mirror."""
        single = isinstance(images, str | Path | np.ndarray | torch.Tensor) or hasattr(
            images, "mode"
        )
        items: Sequence[Any] = [images] if single else list(images)
        if binary and not self.thresholds:
            raise DataError(
                f"this model folder has no tuned thresholds ({DECISIONS_FILE}): evaluate its "
                "run once (`trcgl evaluate --run-dir RUN`) or predict without binary=True"
            )
        probs = []
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            batch = torch.stack([self.transform(_as_array(item)) for item in chunk])
            probs.append(probabilities(self.model, batch.to(self.device), tta).cpu().numpy())
        p = np.concatenate(probs) if probs else np.zeros((0, len(self.classes)))
        frame = pd.DataFrame(p.astype(np.float64), columns=list(self.classes))
        frame.insert(0, "image", [_name(item, i) for i, item in enumerate(items)])
        if binary:
            assert self.thresholds is not None
            frame = pd.concat([frame, binary_columns(p, self.classes, self.thresholds)], axis=1)
        return frame


def load(folder: str | Path, device: str | torch.device | None = None) -> Predictor:
    """The model folder ``folder`` (written by ``trcgl train``) as a :class:`Predictor`."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError("no such model folder", path=path)
    return Predictor(load_model(path), device)
