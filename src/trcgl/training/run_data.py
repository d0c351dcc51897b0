"""What training and evaluation read from a prepared run directory.

The real images come from ``manifest.parquet`` (read through the image cache); the synthetic
images the diffusion stage kept (:mod:`trcgl.diffusion.stage`) from ``synthetic/manifest.
parquet``, whose ``image`` entries are paths relative to the run directory (already resized to
the cache size). They join the training split only when asked for (``synthetic=True``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trcgl.data.cache import cached_relpath
from trcgl.data.dataset import ManifestDataset
from trcgl.data.manifest import Manifest
from trcgl.data.transforms import build_transform
from trcgl.errors import DataError
from trcgl.labels.graph import LabelGraph
from trcgl.run_dir import RunDir

#: The kept synthetic images as manifest rows, relative to the run directory.
SYNTHETIC_MANIFEST = "synthetic/manifest.parquet"


@dataclass
class RunData:
    """Manifest, label graph, frequency groups and where the cached images are.

    ``run_dir`` and ``cache_root`` are absolute (resolved by :class:`~trcgl.run_dir.RunDir`), so
    the synthetic rows' run-relative paths and the real rows' cache-relative ones never mix.
    """

    run_dir: Path
    manifest: Manifest
    graph: LabelGraph
    groups: dict[str, list[str]]
    cache_root: Path
    image_size: int

    @classmethod
    def load(cls, run_dir: str | Path, synthetic: bool = False) -> RunData:
        """Read a prepared run; with ``synthetic`` the kept synthetic images join the training
        split (an error if the diffusion stage has not written them)."""
        run = RunDir(run_dir)
        run_dir = run.root
        info: dict[str, Any] = run.label_stats()
        cache = info.get("cache")
        if not cache:
            raise DataError(
                f"{run_dir} was prepared from labels only; prepare it with data.image_root set "
                "to train or evaluate on images"
            )
        manifest = Manifest.load(run_dir / "manifest.parquet")
        if synthetic:
            manifest = with_synthetic(manifest, run_dir)
        graph = LabelGraph.load(run_dir / "label_graph.safetensors")
        groups = {g: list(info["groups"][g]) for g in ("head", "medium", "tail")}
        cache_root = run.cache_root(info)
        if cache_root is None or not cache_root.is_dir():
            raise DataError(
                f"the image cache of this run is missing (recorded as {cache['root']!r}); "
                "prepare the run again (`trcgl prepare --force`) to rebuild it",
                path=run_dir / "label_stats.json",
            )
        return cls(run_dir, manifest, graph, groups, cache_root, int(cache["size"]))

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
            raise DataError(f"the manifest of {self.run_dir} has no {split!r} rows")
        real = (rows["source"] == "real").to_numpy()
        rows.loc[real, "image"] = rows.loc[real, "image"].map(cached_relpath)
        rows.loc[~real, "image"] = [str(self.run_dir / p) for p in rows.loc[~real, "image"]]
        transform = build_transform(size or self.image_size, train, mean=mean, std=std, seed=seed)
        return ManifestDataset(rows, self.manifest.classes, self.cache_root, transform)

    def is_synthetic(self, split: str) -> np.ndarray:
        frame = self.manifest.frame
        return (frame.loc[frame["split"] == split, "source"] != "real").to_numpy()


def with_synthetic(manifest: Manifest, run_dir: Path) -> Manifest:
    """``manifest`` followed by the run's kept synthetic rows (``synthetic/manifest.parquet``)."""
    path = run_dir / SYNTHETIC_MANIFEST
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
