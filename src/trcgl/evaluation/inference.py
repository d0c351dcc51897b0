"""Inference with a saved model folder: probabilities for a run split or for image files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from trcgl.data.cache import resize_square
from trcgl.data.images import is_dicom, read_image
from trcgl.data.manifest import checked_relative
from trcgl.data.transforms import build_transform, to_gray_uint8
from trcgl.errors import DataError, ImageReadError
from trcgl.models.base import Classifier

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")


class ModelInput:
    """Any decoded radiograph → the model's input tensor, through the training data's path:
    the cache's resize (:func:`~trcgl.data.cache.resize_square`, Lanczos) to the model's input
    size, then the evaluation transform. A new image therefore reaches the model with the same
    pixels as a training image that went through the image cache."""

    def __init__(self, size: int, mean, std) -> None:
        self.size = int(size)
        self.transform = build_transform(self.size, False, mean=mean, std=std)

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        gray = to_gray_uint8(image)
        return self.transform(np.asarray(resize_square(gray, self.size)))


def model_transform(model: Classifier, size: int | None = None) -> ModelInput:
    """The input path the model was trained with (size, mean, std): see :class:`ModelInput`."""
    pre = model.preprocessing or {}
    mean, std = model.normalization
    size = size or pre.get("image_size")
    if size is None:
        raise DataError("the model folder does not record its input size; pass --size")
    return ModelInput(int(size), mean=pre.get("mean", mean), std=pre.get("std", std))


def list_images(source: str | Path, image_root: str | Path | None = None) -> pd.DataFrame:
    """Images to predict: a folder (searched recursively) or a CSV with an ``image`` or
    ``ImageID`` column (paths relative to ``image_root`` or to the CSV's folder).

    In a folder, an image is a file with a suffix of :data:`IMAGE_SUFFIXES` or a DICOM file
    of any name (``DICM`` at byte 128, as PACS exports often have no suffix); hidden files are
    skipped. Its ``ImageID`` is its path relative to the folder (the file name in a flat
    folder), so equal names in different subfolders stay apart. A CSV's relative paths must
    stay inside their root."""
    source = Path(source)
    if source.is_dir():
        files = sorted(
            p
            for p in source.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(source).parts)
            and (p.suffix.lower() in IMAGE_SUFFIXES or is_dicom(p))
        )
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)} or DICOM) found", path=source)
        ids = [p.relative_to(source).as_posix() for p in files]
        return pd.DataFrame({"image_id": ids, "path": [str(p) for p in files]})
    if not source.is_file():
        raise DataError("not found", path=source)
    frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    column = "image" if "image" in frame else "ImageID" if "ImageID" in frame else None
    if column is None:
        raise DataError("needs an 'image' or 'ImageID' column", path=source)
    root = Path(image_root) if image_root is not None else source.parent
    paths = []
    for row, value in enumerate(frame[column], start=1):
        if Path(value).is_absolute() and image_root is None:
            paths.append(value)  # a CSV of absolute paths, with no root to stay inside
            continue
        paths.append(str(root / checked_relative(value, source, row, column)))
    ids = frame["ImageID"] if "ImageID" in frame else list(frame[column])
    if len(set(ids)) != len(ids):
        dup = pd.Series(list(ids)).duplicated()
        row = int(dup.to_numpy().argmax()) + 1
        raise DataError(f"image {list(ids)[row - 1]!r} is listed twice", path=source, row=row)
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


TTA = (None, "hflip")


@torch.no_grad()
def probabilities(model: Classifier, images: torch.Tensor, tta: str | None = None) -> torch.Tensor:
    """σ(logits) of a batch of model inputs; ``tta="hflip"``: the mean of the image's and its
    horizontal mirror's probabilities."""
    if tta not in TTA:
        raise DataError(f"unknown test-time augmentation {tta!r}; one of: none, hflip")
    p = torch.sigmoid(model(images)["logits"].float())
    if tta == "hflip":
        p = 0.5 * (p + torch.sigmoid(model(torch.flip(images, dims=[-1]))["logits"].float()))
    return p


def binary_columns(
    probs: np.ndarray, classes: Sequence[str], thresholds: Mapping[str, float]
) -> pd.DataFrame:
    """0/1 decisions ``pred:<class>`` = 1 where the probability reaches the class's threshold."""
    missing = [c for c in classes if c not in thresholds]
    if missing:
        raise DataError(f"no decision threshold for the classes {missing[:3]}")
    thr = np.array([float(thresholds[c]) for c in classes])
    return pd.DataFrame(
        (np.asarray(probs) >= thr).astype(np.int64), columns=[f"pred:{c}" for c in classes]
    )


def calibrated(probs: np.ndarray, model: Classifier) -> np.ndarray:
    """σ(logit p / T) with the temperature T the model folder keeps (``decisions.json``,
    fitted on validation by ``trcgl evaluate``). The map is monotone, so rankings (AP, AUC)
    and the 0/1 decisions at the tuned thresholds (made on the raw probabilities they were
    tuned on) do not change."""
    from trcgl.evaluation.calibration import apply_temperature

    temperature = (model.decisions or {}).get("temperature")
    if temperature is None:
        raise DataError(
            "the model folder has no calibration temperature (decisions.json): run `trcgl "
            "evaluate --run-dir RUN` on its run once, or predict uncalibrated"
        )
    return apply_temperature(probs, float(temperature))


@torch.no_grad()
def predict_files(
    model: Classifier,
    images: pd.DataFrame,
    batch_size: int = 32,
    num_workers: int = 0,
    size: int | None = None,
    skip_corrupt: bool = False,
    device: str | torch.device = "cpu",
    tta: str | None = None,
) -> Predictions:
    """Probabilities for the rows of :func:`list_images`; ``tta="hflip"`` averages them with
    those of the horizontally flipped image."""
    data = _Files(images["path"], model_transform(model, size), skip_corrupt)
    loader = DataLoader(data, batch_size=batch_size, num_workers=num_workers)
    model.eval().to(device)
    probs, ok = [], []
    for batch in loader:
        probs.append(probabilities(model, batch["image"].to(device), tta).cpu())
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
    """Probabilities and labels (1, 0, NaN where unknown) over a
    :class:`~trcgl.data.dataset.ManifestDataset`."""
    model.eval().to(device)
    probs, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
        probs.append(torch.sigmoid(model(batch["image"].to(device))["logits"].float()).cpu())
        labels.append(torch.where(batch["mask"] != 0, batch["labels"], torch.nan))
    return torch.cat(probs).numpy().astype(np.float64), torch.cat(labels).numpy()
