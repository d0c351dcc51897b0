"""A run directory: where its files are, and how the paths it records are stored and read.

Every path that a stage records inside a run directory is written with :meth:`RunDir.store`
and read back with :meth:`RunDir.resolve`, so a run directory works from any working directory
and can be copied, moved or renamed:

* a path inside the run directory is stored relative to it (``cache/128``);
* a path outside it (an image root, an external ``images.cache_dir``) is stored absolute, as
  the user's machine knows it.

:meth:`RunDir.resolve` also reads records written by older versions of trcgl, which stored
paths as given (``runs/demo/cache/128``): a relative path that does not exist under the run
directory but whose tail after the run directory's own name does is taken from there.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePath
from typing import Any

import pandas as pd

from trcgl.data.manifest import Manifest
from trcgl.errors import DataError
from trcgl.labels.graph import LabelGraph
from trcgl.training.data import TrainingData, with_synthetic

#: The prepare stage's record of label statistics, groups and the image cache.
LABEL_STATS = "label_stats.json"
MANIFEST = "manifest.parquet"
LABEL_GRAPH = "label_graph.safetensors"
#: The kept synthetic images as manifest rows, their paths relative to the run directory.
SYNTHETIC_MANIFEST = "synthetic/manifest.parquet"
#: Per-class metrics and tuned thresholds of one evaluation split.
PER_CLASS = "per_class.csv"


class RunDir:
    """The run directory at ``root`` (made absolute once, so later joins never double it)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __truediv__(self, relative: str | PurePath) -> Path:
        return self.root / relative

    def store(self, path: str | Path) -> str:
        """``path`` as recorded: relative (POSIX form) when it lies inside the run directory,
        else absolute."""
        absolute = Path(path).expanduser().absolute()
        try:
            return absolute.relative_to(self.root).as_posix() or "."
        except ValueError:
            return str(absolute)

    def resolve(self, stored: str | Path) -> Path:
        """A recorded path as a path on this machine (see the module docstring)."""
        path = Path(stored)
        if path.is_absolute():
            return path
        here = self.root / path
        if here.exists():
            return here
        parts = path.parts
        name = self.root.name
        if name in parts:  # recorded as the run directory was given: "<...>/<name>/<rest>"
            rest = parts[len(parts) - 1 - parts[::-1].index(name) + 1 :]
            candidate = self.root.joinpath(*rest) if rest else self.root
            if candidate.exists():
                return candidate
        return here

    def evaluation(self, split: str) -> Path:
        """``evaluation/<split>/``, where ``trcgl evaluate`` writes."""
        return self.root / "evaluation" / split

    def tuned_thresholds(self, split: str = "val") -> dict[str, float] | None:
        """Per-class thresholds that ``trcgl evaluate`` tuned (F1-optimal on the validation
        split) and wrote to ``evaluation/<split>/per_class.csv``, by class name (NaN where the
        table has none); ``None`` when the run has not been evaluated on ``split``."""
        path = self.evaluation(split) / PER_CLASS
        if not path.is_file():
            return None
        table = pd.read_csv(path)
        if "threshold" not in table:
            return None
        return dict(zip(table["class"].astype(str), table["threshold"].astype(float), strict=True))

    def has_synthetic(self) -> bool:
        return (self.root / SYNTHETIC_MANIFEST).is_file()

    def label_stats(self) -> dict[str, Any]:
        """``label_stats.json``; an error that says to prepare the run when it is missing."""
        path = self.root / LABEL_STATS
        if not path.is_file():
            raise DataError(f"{self.root} is not a prepared run (run `trcgl prepare` first)")
        return json.loads(path.read_text())

    def cache_root(self, info: dict[str, Any] | None = None) -> Path | None:
        """The real images' cache folder recorded by ``prepare``; ``None`` for labels only."""
        cache = (info if info is not None else self.label_stats()).get("cache")
        if not cache:
            return None
        root = self.resolve(cache["root"])
        own = self.root / "cache" / str(cache.get("size", ""))
        if not root.exists() and own.is_dir():  # an old absolute record of a moved run
            return own
        return root

    def training_data(self, synthetic: bool = False) -> TrainingData:
        """What training and evaluation read from this prepared run; with ``synthetic`` the
        kept synthetic images join the training split (an error if the diffusion stage has
        not written them)."""
        info = self.label_stats()
        cache = info.get("cache")
        if not cache:
            raise DataError(
                f"{self.root} was prepared from labels only; prepare it with data.image_root "
                "set to train or evaluate on images"
            )
        manifest = Manifest.load(self.root / MANIFEST)
        if synthetic:
            manifest = with_synthetic(manifest, self.root / SYNTHETIC_MANIFEST)
        graph = LabelGraph.load(self.root / LABEL_GRAPH)
        groups = {g: list(info["groups"][g]) for g in ("head", "medium", "tail")}
        cache_root = self.cache_root(info)
        if cache_root is None or not cache_root.is_dir():
            raise DataError(
                f"the image cache of this run is missing (recorded as {cache['root']!r}); "
                "prepare the run again (`trcgl prepare --force`) to rebuild it",
                path=self.root / LABEL_STATS,
            )
        return TrainingData(
            manifest, graph, groups, cache_root, int(cache["size"]), synthetic_root=self.root
        )
