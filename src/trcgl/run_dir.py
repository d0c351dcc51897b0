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

**Stage records.** Every stage writes one JSON record last (:data:`STAGE_RECORDS`), with
:meth:`RunDir.write_record`: its own ``id`` and, under ``inputs``, the ids of the records it was
made from. A stage is complete when its record exists and every record it names still has the
id it had (:meth:`RunDir.is_complete`): made again upstream, a stage is stale and runs again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import pandas as pd

from trcgl.data.manifest import Manifest
from trcgl.errors import DataError
from trcgl.files import atomic_write_text

if TYPE_CHECKING:
    from trcgl.training.data import TrainingData

#: The prepare stage's record of label statistics, groups and the image cache.
LABEL_STATS = "label_stats.json"
MANIFEST = "manifest.parquet"
#: Radiologist boxes of the manifest's images (:mod:`trcgl.data.boxes`), where the data has them.
BOXES = "boxes.parquet"
LABEL_GRAPH = "label_graph.safetensors"
#: The kept synthetic images as manifest rows, their paths relative to the run directory.
SYNTHETIC_MANIFEST = "synthetic/manifest.parquet"
#: Per-class metrics and tuned thresholds of one evaluation split.
PER_CLASS = "per_class.csv"
#: Per-class localisation scores beside it (where the run has boxes on the split).
LOCALISATION = "localisation.csv"
#: Each stage's record, written last. ``evaluate <split>`` is ``evaluation/<split>/metrics.json``;
#: ``explain`` is the report's Fig. 4 / Fig. 5 (:mod:`trcgl.stages.explain`).
STAGE_RECORDS = {
    "prepare": "prepare.json",
    "diffusion train": "diffusion/stage.json",
    "diffusion sample": "synthetic/sample.json",
    "diffusion filter": "synthetic/summary.json",
    "train": "train.json",
    "explain": "figures/explain/explain.json",
}
#: The bookkeeping keys of a stage record (not results of the stage).
RECORD_KEYS = ("stage", "id", "inputs", "upstream")
#: The records a stage is made from, where its writer names none.
STAGE_INPUTS = {
    "diffusion train": ("prepare",),
    "diffusion sample": ("diffusion train",),
    "diffusion filter": ("diffusion sample",),
}


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

    # -- stage records ------------------------------------------------------------------------
    def record_path(self, stage: str) -> Path:
        """Where ``stage``'s record lies (``evaluate <split>``: the split's ``metrics.json``)."""
        if stage.startswith("evaluate "):
            return self.evaluation(stage.removeprefix("evaluate ")) / "metrics.json"
        if stage not in STAGE_RECORDS:
            raise KeyError(f"no stage {stage!r}; stages: {sorted(STAGE_RECORDS)}, evaluate <split>")
        return self.root / STAGE_RECORDS[stage]

    def record(self, stage: str) -> dict[str, Any] | None:
        """``stage``'s record, ``None`` when it has not finished."""
        path = self.record_path(stage)
        return json.loads(path.read_text()) if path.is_file() else None

    def record_id(self, stage: str) -> str | None:
        """The id of ``stage``'s current record (``None``: no record, or one from a trcgl
        version that wrote none)."""
        return (self.record(stage) or {}).get("id")

    def write_record(
        self,
        stage: str,
        payload: Mapping[str, Any],
        started: float | None = None,
        inputs: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Write ``stage``'s record (atomically; last, after its outputs): ``payload`` with a new
        ``id``, the current ids of ``inputs`` (default :data:`STAGE_INPUTS`), and, given the
        time the stage ``started``, its seconds and finishing time. Returns the record."""
        names = STAGE_INPUTS.get(stage, ()) if inputs is None else tuple(inputs)
        record: dict[str, Any] = {
            "stage": stage,
            "id": uuid.uuid4().hex,
            "inputs": {name: self.record_id(name) for name in names},
        }
        if started is not None:
            record["seconds"] = round(time.time() - started, 2)
            record["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        record.update({k: v for k, v in payload.items() if k not in ("id", "inputs")})
        path = self.record_path(stage)
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        return record

    def is_complete(self, stage: str) -> bool:
        """True when ``stage`` has a record and each record it was made from is still the one
        it names (records of older versions name their one input under ``upstream``)."""
        record = self.record(stage)
        if record is None:
            return False
        inputs = record.get("inputs")
        if inputs is None:  # written before the ``inputs`` key
            names = STAGE_INPUTS.get(stage, ())
            inputs = {names[0]: record["upstream"]} if "upstream" in record and names else {}
        return all(self.record_id(name) == made_from for name, made_from in inputs.items())

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
        # Imported here: they load torch and the augmentations, which the commands that only
        # read a run's records (and the image cache's worker processes, which import the
        # command-line module again) do not need.
        from trcgl.labels.graph import LabelGraph
        from trcgl.training.data import TrainingData, with_synthetic

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
