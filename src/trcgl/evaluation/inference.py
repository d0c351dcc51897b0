"""Inference with a saved model folder: probabilities for a run split or for image files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from trcgl.data.images import read_image
from trcgl.data.transforms import build_transform
from trcgl.errors import DataError, ImageReadError
from trcgl.models.base import Classifier

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")


def model_transform(model: Classifier, size: int | None = None):
    """The evaluation transform the model was trained with (size, mean, std)."""
    pre = model.preprocessing or {}
    mean, std = model.normalization
    size = size or pre.get("image_size")
    if size is None:
        raise DataError("the model folder does not record its input size; pass --size")
    return build_transform(int(size), False, mean=pre.get("mean", mean), std=pre.get("std", std))


def list_images(source: str | Path, image_root: str | Path | None = None) -> pd.DataFrame:
    """Images to predict: a folder (searched recursively) or a CSV with an ``image`` or
    ``ImageID`` column (paths relative to ``image_root`` or to the CSV's folder)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found", path=source)
        return pd.DataFrame({"image_id": [p.name for p in files], "path": [str(p) for p in files]})
    if not source.is_file():
        raise DataError("not found", path=source)
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    column = "image" if "image" in frame else "ImageID" if "ImageID" in frame else None
    if column is None:
        raise DataError("needs an 'image' or 'ImageID' column", path=source)
    root = Path(image_root) if image_root is not None else source.parent
    paths = [str(p if Path(p).is_absolute() else root / p) for p in frame[column]]
    ids = frame["ImageID"] if "ImageID" in frame else [Path(p).name for p in frame[column]]
    return pd.DataFrame({"image_id": list(ids), "path": paths})


class _Files(Dataset):
    def __init__(self, paths: Sequence[str], transform, skip_corrupt: bool) -> None:
        self.paths, self.transform, self.skip = list(paths), transform, skip_corrupt

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            image = self.transform(read_image(self.paths[i]))
            ok = True
        except ImageReadError:
            if not self.skip:
                raise
            image, ok = self.transform(np.zeros((8, 8), np.uint8)), False
        return {"image": image, "ok": ok, "index": i}


@dataclass
class Predictions:
    image_ids: list[str]
    probabilities: np.ndarray
    classes: tuple[str, ...]
    skipped: list[str] = field(default_factory=list)

    def to_frame(self) -> pd.DataFrame:
        """The CXR-LT submission layout: ``ImageID`` then one probability column per class."""
        frame = pd.DataFrame(self.probabilities, columns=list(self.classes))
        frame.insert(0, "ImageID", self.image_ids)
        return frame


@torch.no_grad()
def predict_files(
    model: Classifier,
    images: pd.DataFrame,
    batch_size: int = 32,
    num_workers: int = 0,
    size: int | None = None,
    skip_corrupt: bool = False,
    device: str | torch.device = "cpu",
) -> Predictions:
    """Probabilities for the rows of :func:`list_images`."""
    data = _Files(images["path"], model_transform(model, size), skip_corrupt)
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    model.eval().to(device)
    probs, ok = [], []
    for batch in loader:
        probs.append(torch.sigmoid(model(batch["image"].to(device))["logits"].float()).cpu())
        ok.append(batch["ok"])
    p = torch.cat(probs).numpy().astype(np.float64)
    good = torch.cat(ok).numpy().astype(bool)
    ids = list(images["image_id"])
    skipped = [path for path, g in zip(images["path"], good, strict=True) if not g]
    return Predictions(
        [i for i, g in zip(ids, good, strict=True) if g], p[good], model.classes, skipped
    )


@torch.no_grad()
def predict_dataset(
    model: Classifier,
    dataset: Dataset,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and labels over a :class:`~trcgl.data.dataset.ManifestDataset`."""
    model.eval().to(device)
    probs, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        probs.append(torch.sigmoid(model(batch["image"].to(device))["logits"].float()).cpu())
        labels.append(batch["labels"])
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(labels).numpy()
