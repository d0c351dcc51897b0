"""The torch ``Dataset`` over a manifest: image, multi-hot labels, which labels are known, and
per-sample loss weight.

Everything the training loop needs per image comes from one manifest row: the image path (``image``,
relative to ``image_root`` unless absolute), the class columns in the given class order (1, 0, or
NaN for an unknown label; :mod:`trcgl.data.manifest`), and ``weight`` (``w_syn`` for synthetic rows,
docs/method.md §1; 1.0 when the column is absent). The manifest is validated once, at construction,
so a bad column fails with a clear :class:`~trcgl.errors.DataError` before any worker starts; per
item, only the image is read (with :func:`~trcgl.data.images.read_image`; point ``image_root`` at a
cache built by :func:`~trcgl.data.cache.build_image_cache` for speed).

With augmenting transforms in ``DataLoader`` workers, pass
``worker_init_fn=trcgl.data.transforms.worker_init_fn`` so each worker augments differently.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from trcgl.data.images import read_image
from trcgl.errors import DataError, ImageReadError

__all__ = ["ManifestDataset"]


class ManifestDataset(Dataset[dict[str, Any]]):
    """Rows of a manifest as training samples.

    Args:
        manifest: the manifest ``DataFrame`` (or an object with a ``.frame`` DataFrame); needs
            ``image`` and one column per class (1, 0 or NaN = unknown); ``weight`` is optional
            (default 1.0), and ``split`` is needed only when ``split`` is given.
        class_names: class columns, in the model's output order.
        image_root: folder that relative ``image`` entries are relative to (``None``: as is).
        transform: ``np.ndarray (H×W uint8) → Tensor (3×S×S)``, e.g.
            :func:`~trcgl.data.transforms.build_transform`.
        split: keep only rows whose ``split`` equals this (``None``: all rows).

    Items are ``{"image": float32 3×S×S, "labels": float32 (C,), "mask": float32 (C,), "weight":
    float32 scalar, "index": int}``: ``labels`` is 1 for a positive and 0 otherwise (an unknown
    label reads 0 there), ``mask`` is 1 where the label is known and 0 where it is unknown (the
    losses give those cells weight 0, :mod:`trcgl.models.losses`); ``index`` is the item's position
    in this dataset (``0 … len-1``); :attr:`manifest` holds the selected rows in that order, with
    the original index kept, so ``dataset.manifest.index[i]`` is the source row of item ``i``.

    Raises:
        DataError: a class column, ``image`` or ``split`` is missing; a label is not 0, 1 or
            NaN; a weight is not a finite number ≥ 0; ``image`` holds a non-path.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        class_names: Sequence[str],
        image_root: str | Path | None,
        transform: Callable[[np.ndarray], torch.Tensor],
        split: str | None = None,
    ) -> None:
        frame = getattr(manifest, "frame", manifest)
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"manifest must be a pandas DataFrame, got {type(manifest).__name__}")
        self.class_names: list[str] = [str(c) for c in class_names]
        if not self.class_names:
            raise DataError("class_names is empty")
        duplicates = sorted({c for c in self.class_names if self.class_names.count(c) > 1})
        if duplicates:
            raise DataError(f"class names repeated: {duplicates}")

        if "image" not in frame.columns:
            raise DataError("manifest has no 'image' column", column="image")
        missing = [c for c in self.class_names if c not in frame.columns]
        if missing:
            raise DataError(
                f"manifest lacks class column(s) {missing} (of {len(self.class_names)} classes)",
                column=missing[0],
            )
        if split is not None:
            if "split" not in frame.columns:
                raise DataError(
                    f"split={split!r} asked for but the manifest has no 'split' column",
                    column="split",
                )
            frame = frame[frame["split"] == split]

        self.manifest: pd.DataFrame = frame.copy()
        self.image_root: Path | None = None if image_root is None else Path(image_root)
        self.transform = transform
        values = self._validated_labels(self.manifest)
        self._known = ~np.isnan(values)
        self._labels = np.where(self._known, values, 0.0).astype(np.float32)
        self._weights = self._validated_weights(self.manifest)
        self._paths = [self._resolve(row, image) for row, image in self.manifest["image"].items()]

    # -- validation ----------------------------------------------------------------------------

    def _validated_labels(self, frame: pd.DataFrame) -> np.ndarray:
        labels = np.zeros((len(frame), len(self.class_names)), dtype=np.float32)
        for j, name in enumerate(self.class_names):
            column = frame[name]
            values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            bad = ~np.isin(values, (0.0, 1.0)) & ~column.isna().to_numpy()
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise DataError(
                    f"labels must be 0, 1 or NaN (unknown); row {frame.index[first]!r} has "
                    f"{frame[name].iloc[first]!r}",
                    column=name,
                )
            labels[:, j] = values
        return labels

    @staticmethod
    def _validated_weights(frame: pd.DataFrame) -> np.ndarray:
        if "weight" not in frame.columns:
            return np.ones(len(frame), dtype=np.float32)
        values = pd.to_numeric(frame["weight"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"weights must be finite numbers >= 0; row {frame.index[first]!r} has "
                f"{frame['weight'].iloc[first]!r}",
                column="weight",
            )
        return values.astype(np.float32)

    def _resolve(self, row: object, image: object) -> str:
        if not isinstance(image, (str, os.PathLike)) or not os.fspath(image):
            raise DataError(f"row {row!r}: image entry {image!r} is not a path", column="image")
        path = Path(image)
        if not path.is_absolute() and self.image_root is not None:
            path = self.image_root / path
        return str(path)

    # -- Dataset protocol ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index < 0:
            index += len(self)
        path = self._paths[index]  # IndexError for out-of-range, as Dataset users expect
        try:
            image = read_image(path)
        except ImageReadError as exc:
            row = self.manifest.index[index]
            raise ImageReadError(f"{exc.reason} (manifest row {row!r})", path=path) from exc
        return {
            "image": self.transform(image),
            "labels": torch.from_numpy(self._labels[index].copy()),
            "mask": torch.from_numpy(self._known[index].astype(np.float32)),
            "weight": torch.tensor(self._weights[index], dtype=torch.float32),
            "index": index,
        }

    # -- whole-set views -----------------------------------------------------------------------

    def labels_matrix(self) -> np.ndarray:
        """The N×C 0/1 matrix of positives (``int64``, class order; an unknown label is 0),
        e.g. for the class counts."""
        return self._labels.astype(np.int64)

    def known_matrix(self) -> np.ndarray:
        """The N×C boolean matrix of known labels."""
        return self._known.copy()

    def label_values(self) -> np.ndarray:
        """The N×C label matrix (``float64``): 1, 0, or NaN where unknown."""
        return np.where(self._known, self._labels, np.nan)

    def weights(self) -> np.ndarray:
        """The N per-sample loss weights (``float32``)."""
        return self._weights.copy()

    def image_paths(self) -> list[str]:
        """The resolved image paths, in item order."""
        return list(self._paths)
