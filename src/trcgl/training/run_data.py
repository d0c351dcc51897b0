"""What training and evaluation read from a prepared run directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trcgl.data.cache import cached_relpath
from trcgl.data.dataset import ManifestDataset
from trcgl.data.manifest import Manifest
from trcgl.data.transforms import build_transform
from trcgl.errors import DataError
from trcgl.labels.graph import LabelGraph


@dataclass
class RunData:
    """Manifest, label graph, frequency groups and where the cached images are."""

    run_dir: Path
    manifest: Manifest
    graph: LabelGraph
    groups: dict[str, list[str]]
    cache_root: Path
    image_size: int

    @classmethod
    def load(cls, run_dir: str | Path) -> RunData:
        run_dir = Path(run_dir)
        info_path = run_dir / "label_stats.json"
        if not info_path.is_file():
            raise DataError(f"{run_dir} is not a prepared run (run `trcgl prepare` first)")
        info: dict[str, Any] = json.loads(info_path.read_text())
        cache = info.get("cache")
        if not cache:
            raise DataError(
                f"{run_dir} was prepared from labels only; prepare it with data.image_root set "
                "to train or evaluate on images"
            )
        manifest = Manifest.load(run_dir / "manifest.parquet")
        graph = LabelGraph.load(run_dir / "label_graph.safetensors")
        groups = {g: list(info["groups"][g]) for g in ("head", "medium", "tail")}
        return cls(run_dir, manifest, graph, groups, Path(cache["root"]), int(cache["size"]))

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
        rows["image"] = rows["image"].map(cached_relpath)
        transform = build_transform(size or self.image_size, train, mean=mean, std=std, seed=seed)
        return ManifestDataset(rows, self.manifest.classes, self.cache_root, transform)

    def is_synthetic(self, split: str) -> np.ndarray:
        frame = self.manifest.frame
        return (frame.loc[frame["split"] == split, "source"] != "real").to_numpy()
