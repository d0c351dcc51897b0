"""What training and evaluation read: a manifest, its label graph and frequency groups, and
where its images are.

Real rows' images are read through the image cache (``cache_root``, by
:func:`~trcgl.data.cache.cached_relpath`); synthetic rows' ``image`` entries are relative to
``synthetic_root`` (already resized to the cache size). :meth:`trcgl.run_dir.RunDir.
training_data` builds one from a prepared run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trcgl.data.cache import cached_relpath
from trcgl.data.dataset import ManifestDataset
from trcgl.data.manifest import Manifest
from trcgl.data.transforms import build_transform
from trcgl.errors import DataError
from trcgl.labels.graph import LabelGraph


@dataclass
class TrainingData:
    """Manifest, label graph, frequency groups and where the images are.

    ``cache_root`` and ``synthetic_root`` are absolute, so the synthetic rows' paths and the
    real rows' cache-relative ones never mix.
    """

    manifest: Manifest
    graph: LabelGraph
    groups: dict[str, list[str]]
    cache_root: Path
    image_size: int
    #: Folder the synthetic rows' ``image`` paths are relative to (the run directory).
    synthetic_root: Path | None = None

    def dataset(
        self,
        split: str,
        *,
        train: bool,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        size: int | None = None,
        seed: int | None = None,
    ) -> ManifestDataset:
        """The rows of ``split``, read from the image cache, with the train or eval transform."""
        frame = self.manifest.frame
        rows = frame[frame["split"] == split].copy()
        if rows.empty:
            raise DataError(f"the manifest has no {split!r} rows")
        real = (rows["source"] == "real").to_numpy()
        rows.loc[real, "image"] = rows.loc[real, "image"].map(cached_relpath)
        if (~real).any():
            root = self.synthetic_root
            if root is None:
                raise DataError("synthetic rows, but no synthetic_root to read them from")
            rows.loc[~real, "image"] = [str(root / p) for p in rows.loc[~real, "image"]]
        transform = build_transform(size or self.image_size, train, mean=mean, std=std, seed=seed)
        return ManifestDataset(rows, self.manifest.classes, self.cache_root, transform)

    def is_synthetic(self, split: str) -> np.ndarray:
        frame = self.manifest.frame
        return (frame.loc[frame["split"] == split, "source"] != "real").to_numpy()


def with_synthetic(manifest: Manifest, path: Path) -> Manifest:
    """``manifest`` followed by the kept synthetic rows of the manifest file ``path``."""
    if not path.is_file():
        raise DataError(
            "no synthetic images in this run: run `trcgl diffusion train`, `sample` and "
            "`filter` first, or set diffusion.enabled=false",
            path=path,
        )
    extra = Manifest.load(path)
    if tuple(extra.classes) != tuple(manifest.classes):
        raise DataError("synthetic rows have other classes than the manifest", path=path)
    frame = manifest.frame.copy()
    for name in extra.frame.columns.difference(frame.columns):  # e.g. the synthetic prompts
        frame[name] = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    return Manifest(frame, manifest.classes).extended(extra.frame)
