"""The ``prepare`` stage: labels (and images) → manifest, split, label statistics, graph.

Outputs in the run directory (each written atomically; ``prepare.json`` last, so its presence
means the stage is complete):

* ``config.yaml``: the resolved configuration;
* ``manifest.parquet``: one row per image with its split;
* ``label_stats.csv`` / ``label_stats.json``: per-class image and patient counts per split,
  frequency groups and their thresholds, rows dropped and why, raw findings left unmapped;
* ``label_graph.safetensors``: the graph of Eq. 15–20 from the training split;
* ``boxes.parquet``: the radiologist boxes of the manifest's images, where the format has a box
  file (NIH's ``BBox_List_2017``) and ``data.boxes`` is on;
* ``figures/label_statistics.png``: Fig. 2;
* ``cache/<size>/``: the images resized once (when an image root is given);
* ``skipped_images.csv``: images skipped as missing or corrupt (only with ``skip_corrupt``).

All input checks run before the first file is written, so a bad input leaves nothing
half-written behind.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from trcgl import __version__
from trcgl.config import Config, DataConfig, resolve_path
from trcgl.data.boxes import save_boxes
from trcgl.data.cache import build_image_cache
from trcgl.data.manifest import SPLITS, Manifest
from trcgl.data.readers import (
    ReadResult,
    apply_filters,
    installed_label_csv,
    read_exclusion_list,
)
from trcgl.data.sources import class_targets, join_sources, relabel, relabel_boxes
from trcgl.data.split import split_patients
from trcgl.data.vocab import load_mapping, vocabulary
from trcgl.errors import ConfigError, DataError
from trcgl.evaluation.figures import plot_label_statistics
from trcgl.files import atomic_write_text
from trcgl.labels.graph import LabelGraph
from trcgl.labels.groups import FrequencyGroups, frequency_groups
from trcgl.registry import DATA_FORMATS
from trcgl.run_dir import BOXES, LABEL_STATS, STAGE_RECORDS, RunDir

STAGE_FILE = STAGE_RECORDS["prepare"]


@dataclass
class Prepared:
    """What the stage produced, in memory."""

    manifest: Manifest
    groups: FrequencyGroups
    graph: LabelGraph
    stats: pd.DataFrame
    info: dict[str, Any]


def label_csv_path(data: DataConfig) -> Path:
    """The configured label CSV, or the copy inside the installed torchxrayvision wheel."""
    if data.labels_csv is not None:
        return resolve_path(data.labels_csv)
    name = DATA_FORMATS.get(data.format).installed_csv
    found = installed_label_csv(name) if name else None
    if found is None:
        raise ConfigError(
            "data.labels_csv is not set"
            + (
                f" and {name} was not found in an installed torchxrayvision package; "
                "`pip install torchxrayvision` or set data.labels_csv=PATH"
                if name
                else ""
            )
        )
    return found


def read_boxes(data: DataConfig, manifest: Manifest) -> pd.DataFrame | None:
    """The boxes of ``manifest``'s images (:mod:`trcgl.data.boxes`), or ``None`` where the
    format has no box file or ``data.boxes`` is off."""
    fmt = DATA_FORMATS.get(data.format)
    if not data.boxes or fmt.read_boxes is None:
        if data.boxes_csv is not None and data.boxes:
            raise ConfigError(f"data.boxes_csv is set, but format {data.format!r} reads no boxes")
        return None
    if data.boxes_csv is not None:
        path = resolve_path(data.boxes_csv)
    elif fmt.boxes_from_labels:
        path = label_csv_path(data)
    else:
        path = installed_label_csv(fmt.installed_boxes) if fmt.installed_boxes else None
        if path is None:
            return None
    boxes = fmt.read_boxes(path, manifest, data)
    if boxes is None:
        return None
    keep = boxes["image_id"].isin(set(manifest.frame["image_id"].astype(str)))
    return boxes[keep].reset_index(drop=True)


def class_names(data: DataConfig) -> tuple[str, ...]:
    """The classes a data section reads: ``classes``, ``vocabulary`` or its format's own."""
    if data.classes:
        if len(set(data.classes)) != len(data.classes):
            raise ConfigError("data.classes lists a class twice")
        return tuple(data.classes)
    name = data.vocabulary or DATA_FORMATS.get(data.format).vocabulary
    if name is None:
        raise ConfigError(f"data.vocabulary or data.classes is needed for format {data.format!r}")
    try:
        return vocabulary(name)
    except DataError as exc:
        raise ConfigError(f"data.vocabulary: {exc}") from None


def shared_classes(config: Config) -> tuple[str, ...]:
    """The run's vocabulary: the data section's, or with ``data.sources`` its ``classes`` /
    ``vocabulary`` or else the union of the sources' classes (in order of appearance)."""
    data = config.data
    if not data.sources or data.classes or data.vocabulary:
        return class_names(data)
    union: dict[str, None] = {}
    for source in data.source_configs():
        union.update(dict.fromkeys(class_names(source.data)))
    return tuple(union)


def read_dataset(data: DataConfig, name: str) -> ReadResult:
    """Read a data section's label file into a manifest (its ``dataset`` column: ``name``) and
    apply the view / exclusion filters."""
    result = DATA_FORMATS.get(data.format).read(label_csv_path(data), class_names(data), data)
    result.manifest.frame["dataset"] = name
    exclude: set[str] = set()
    for item in data.exclude:
        exclude |= read_exclusion_list(resolve_path(item))
    return apply_filters(result, data.projections, exclude)


def check_images(result: ReadResult, image_root: Path, skip: bool) -> tuple[ReadResult, list]:
    """Every row's image file must exist; with ``skip`` missing ones are dropped and listed."""
    if not image_root.is_dir():
        raise DataError("image folder not found (data.image_root)", path=image_root)
    frame = result.manifest.frame
    exists = np.fromiter(
        ((image_root / p).is_file() for p in frame["image"]), dtype=bool, count=len(frame)
    )
    if exists.all():
        return result, []
    missing = np.flatnonzero(~exists)
    if not skip:
        i = int(missing[0])
        raise DataError(
            f"image file not found: {image_root / frame['image'].iloc[i]} "
            f"({len(missing)} missing in all; set data.skip_corrupt=true to skip and list them)",
            path=result.source,
            row=int(result.rows[i]),
            column="image",
        )
    return result.keep(exists), [(frame["image"].iloc[i], "file not found") for i in missing]


def label_statistics(manifest: Manifest) -> pd.DataFrame:
    """Per class: images and patients with the class (known positives) in each split present,
    and in all; where some label is unknown, also the images whose label is unknown
    (``unknown_<split>``)."""
    frame = manifest.frame
    y = manifest.labels().astype(bool)
    unknown = ~manifest.known()
    out = pd.DataFrame({"class": list(manifest.classes)})
    present = [s for s in SPLITS if (frame["split"] == s).any()]
    for s in [*present, "all"]:
        rows = np.ones(len(frame), bool) if s == "all" else (frame["split"] == s).to_numpy()
        out[f"images_{s}"] = y[rows].sum(axis=0)
        patients = frame["patient_id"].to_numpy()[rows]
        out[f"patients_{s}"] = [
            len(np.unique(patients[y[rows, j]])) for j in range(len(manifest.classes))
        ]
        if unknown.any():
            out[f"unknown_{s}"] = unknown[rows].sum(axis=0)
    return out


def given_split(result: ReadResult) -> Manifest:
    """The manifest with the split its reader gave (``split.given``): every row must have one,
    and no patient may be in two splits."""
    frame = result.manifest.frame
    missing = ~frame["split"].isin(SPLITS).to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(
            f"no published split for image {frame['image_id'].iloc[i]!r} (split.given)",
            path=result.source,
            row=int(result.rows[i]),
        )
    spread = frame.groupby("patient_id")["split"].nunique()
    if (spread > 1).any():
        patient = spread.index[int(np.flatnonzero(spread.to_numpy() > 1)[0])]
        raise DataError(
            f"patient {patient!r} is in two published splits; set split.given=false to split "
            "by patient",
            path=result.source,
        )
    return result.manifest


#: The sections whose values decide what ``prepare`` writes.
PREPARE_SECTIONS = ("data", "split", "groups", "graph", "images")


def _config_digest(config: Config) -> str:
    """A digest of the sections ``prepare`` depends on (model or training changes keep it)."""
    tree = config.to_dict()
    text = json.dumps({k: tree[k] for k in PREPARE_SECTIONS}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _same_preparation(run_dir: Path, config: Config) -> bool:
    """Whether the configuration the run was prepared with (its ``config.yaml``, written by
    ``prepare``) asks for what ``config`` asks for, read with today's keys: a key the run's
    trcgl did not have yet counts as at its default, which is what that trcgl did. So a newer
    trcgl, whose prepare sections gained keys, finds a run prepared by an older one complete
    instead of refusing it; any value that differs, or a key it no longer knows, still does."""
    path = run_dir / "config.yaml"
    try:
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    if not isinstance(recorded, dict):
        return False
    defaults, current = Config().to_dict(), config.to_dict()
    for section in PREPARE_SECTIONS:
        was = recorded.get(section) or {}
        if not isinstance(was, dict):
            return False
        read = json.loads(json.dumps({**defaults[section], **was}))
        if read != json.loads(json.dumps(current[section])):
            return False
    return True


def split_rows(config: Config, result: ReadResult) -> Manifest:
    """The rows of ``result`` with their split: the published one (``split.given``) or a
    patient-level stratified one."""
    if len(result.manifest) == 0:
        raise DataError("no images left after filtering", path=result.source)
    if config.split.given:
        return given_split(result)
    return split_patients(
        result.manifest, config.split.val_fraction, config.split.test_fraction, config.split.seed
    )


def compute(config: Config, result: ReadResult) -> Prepared:
    """Split, count and build the graph for the rows of ``result`` (no files written)."""
    prepared = summarize(config, split_rows(config, result))
    prepared.info.update(
        {
            "labels_csv": str(Path(result.source).absolute()),
            "format": config.data.format,
            "mapping": DATA_FORMATS.get(config.data.format).mapping_table(config.data),
            "dropped": dict(result.dropped),
            "unmapped_findings": dict(result.unmapped_findings.most_common()),
        }
    )
    return prepared


def _split_counts(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Images and patients in each split."""
    splits = frame["split"]
    return {
        "images": {s: int((splits == s).sum()) for s in SPLITS},
        "patients": {s: int(frame.loc[splits == s, "patient_id"].nunique()) for s in SPLITS},
    }


def summarize(config: Config, manifest: Manifest) -> Prepared:
    """Count, group and build the graph of a split manifest (no files written)."""
    train = manifest.subset(split="train")
    if config.graph.include_synthetic is False:
        train = train.subset(source="real")
    y_train = train.labels()
    groups = frequency_groups(
        manifest.classes,
        y_train.sum(axis=0),
        config.groups.mode,
        config.groups.head,
        config.groups.tail,
    )
    graph = LabelGraph.from_labels(
        y_train, manifest.classes, config.graph.tau, config.graph.formula
    )
    stats = label_statistics(manifest)
    stats.insert(1, "group", list(groups.group_of))
    frame = manifest.frame
    info: dict[str, Any] = {
        "trcgl_version": __version__,
        "config_digest": _config_digest(config),
        "classes": list(manifest.classes),
        **_split_counts(frame),
        "images_without_class": int((manifest.labels().sum(axis=1) == 0).sum()),
        "unknown_labels": int((~manifest.known()).sum()),
        "groups": {
            "mode": config.groups.mode,
            "head_above": groups.head_above,
            "tail_below": groups.tail_below,
            **groups.as_dict(),
        },
    }
    return Prepared(manifest, groups, graph, stats, info)


def is_complete(run_dir: Path, config: Config) -> bool:
    """True when ``run_dir`` holds a finished prepare stage made with this configuration."""
    done = RunDir(run_dir).record("prepare")
    if done is None:
        return False
    if done.get("config_digest") != _config_digest(config) and not _same_preparation(
        run_dir, config
    ):
        raise ConfigError(
            f"{run_dir} was prepared with another configuration; choose another --run-dir "
            "or pass --force to prepare it again"
        )
    return all((run_dir / f).is_file() for f in done.get("outputs", []))


def prepare(
    config: Config, run_dir: str | Path, *, force: bool = False, progress: bool = True
) -> Prepared | None:
    """Run the stage into ``run_dir``. Returns ``None`` when it was already complete."""
    run_dir = Path(run_dir)
    if not force and run_dir.is_dir() and is_complete(run_dir, config):
        return None
    started = time.time()
    cache_base = (resolve_path(config.images.cache_dir) or run_dir / "cache") / str(
        config.images.size
    )
    if config.data.sources:
        prepared, skipped, boxes = _prepare_sources(config, run_dir, cache_base, progress)
    else:
        data = config.data
        result = read_dataset(data, data.format)
        part = _cache_images(config, data, result, cache_base, run_dir, progress)
        prepared = compute(config, part.result)
        prepared.info["image_root"] = part.image_root
        prepared.info["cache"] = part.cache
        skipped = part.skipped
        boxes = read_boxes(data, prepared.manifest)
    prepared.info["skipped_images"] = len(skipped)
    prepared.info["boxes"] = (
        None if boxes is None else {"boxes": len(boxes), "images": int(boxes["image_id"].nunique())}
    )
    _write(run_dir, config, prepared, skipped, started, boxes)
    return prepared


@dataclass
class _Part:
    """One data set read, its images checked and cached."""

    result: ReadResult
    skipped: list[tuple[str, str]]
    image_root: str | None
    cache: dict[str, Any] | None


def _cache_images(
    config: Config,
    data: DataConfig,
    result: ReadResult,
    cache_root: Path,
    run_dir: Path,
    progress: bool,
) -> _Part:
    """Where ``data`` has an image root: check that every row's image is there and cache the
    images into ``cache_root`` (rows whose image is skipped are dropped)."""
    image_root = resolve_path(data.image_root)
    if image_root is None:
        return _Part(result, [], None, None)
    result, skipped = check_images(result, image_root, data.skip_corrupt)
    report = build_image_cache(
        list(result.manifest.frame["image"]),
        image_root,
        cache_root,
        size=config.images.size,
        workers=config.images.workers,
        skip_corrupt=data.skip_corrupt,
        progress=progress,
        rows=[f"{result.source}, row {r}" for r in result.rows],
    )
    if report.skipped:
        skipped += [(str(img), str(reason)) for img, reason in report.skipped]
        bad = {img for img, _ in report.skipped}
        result = result.keep(~result.manifest.frame["image"].isin(bad).to_numpy())
    cache = {
        "root": RunDir(run_dir).store(cache_root),
        "size": config.images.size,
        "written": report.written,
        "already_present": report.already_present,
    }
    return _Part(result, skipped, str(image_root.absolute()), cache)


def _prepare_sources(
    config: Config, run_dir: Path, cache_base: Path, progress: bool
) -> tuple[Prepared, list[tuple[str, str]], pd.DataFrame | None]:
    """``data.sources``: each data set read, cached under ``<cache>/<name>/``, relabelled to
    the shared vocabulary and split on its own, then joined (:mod:`trcgl.data.sources`)."""
    shared = shared_classes(config)
    sources = config.data.source_configs()
    if len({source.data.image_root is None for source in sources}) > 1:
        raise ConfigError("data.sources: give every source an image_root, or none of them")
    read = []  # every label file read and relabelled before any image is touched
    for source in sources:
        result = read_dataset(source.data, source.name)
        mapping = None if source.relabel is None else load_mapping(source.relabel, shared)
        manifest, unmapped = relabel(result.manifest, shared, mapping, result.source)
        targets = class_targets(result.manifest.classes, shared, mapping, result.source)
        read.append((result.manifest, replace(result, manifest=manifest), targets, unmapped))
    parts, skipped, box_tables, datasets = [], [], [], {}
    caches = []
    for source, (own, result, targets, unmapped) in zip(sources, read, strict=True):
        name, data = source.name, source.data
        part = _cache_images(config, data, result, cache_base / name, run_dir, progress)
        result = part.result
        split = split_rows(config, result)
        parts.append((name, split))
        skipped += [(f"{name}/{img}", reason) for img, reason in part.skipped]
        boxes = read_boxes(data, split_in_own_classes(own, split))
        if boxes is not None:
            box_tables.append(relabel_boxes(boxes, targets, name))
        if part.cache is not None:
            caches.append(part.cache)
        frame = split.frame
        datasets[name] = {
            "format": data.format,
            "labels_csv": str(Path(result.source).absolute()),
            "relabel": source.relabel,
            "image_root": part.image_root,
            **_split_counts(frame),
            "classes_left_out": unmapped,
            "classes_not_labelled": [
                c for c, known in zip(shared, split.known().any(axis=0), strict=True) if not known
            ],
            "dropped": dict(result.dropped),
        }
    prepared = summarize(config, join_sources(parts))
    prepared.info.update(
        {
            "labels_csv": {n: d["labels_csv"] for n, d in datasets.items()},
            "format": " + ".join(d["format"] for d in datasets.values()),
            "mapping": None,
            "dropped": {
                f"{n}: {reason}": count
                for n, d in datasets.items()
                for reason, count in d["dropped"].items()
            },
            "unmapped_findings": {},
            "datasets": datasets,
            "image_root": None,
            "image_roots": {n: d["image_root"] for n, d in datasets.items()} if caches else None,
            "cache": None
            if not caches
            else {
                "root": RunDir(run_dir).store(cache_base),
                "size": config.images.size,
                "written": sum(c["written"] for c in caches),
                "already_present": sum(c["already_present"] for c in caches),
            },
        }
    )
    boxes = pd.concat(box_tables, ignore_index=True) if box_tables else None
    return prepared, skipped, boxes


def split_in_own_classes(own: Manifest, split: Manifest) -> Manifest:
    """The source's rows in its own classes, as ``split`` kept them (for its box reader)."""
    keep = own.frame["image_id"].isin(set(split.frame["image_id"]))
    return Manifest(own.frame[keep.to_numpy()], own.classes)


def _write(
    run_dir: Path,
    config: Config,
    p: Prepared,
    skipped: list[tuple[str, str]],
    started: float,
    boxes: pd.DataFrame | None = None,
) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STAGE_FILE).unlink(missing_ok=True)
    outputs = [
        "config.yaml",
        "manifest.parquet",
        "label_stats.csv",
        "label_stats.json",
        "label_graph.safetensors",
        "figures/label_statistics.png",
    ]
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    p.manifest.save(run_dir / "manifest.parquet")
    atomic_write_text(run_dir / "label_stats.csv", p.stats.to_csv(index=False))
    atomic_write_text(run_dir / LABEL_STATS, json.dumps(p.info, indent=2) + "\n")
    p.graph.save(run_dir / "label_graph.safetensors")
    plot_label_statistics(
        p.groups,
        p.graph.cooccurrence,
        run_dir / "figures" / "label_statistics.png",
        title=f"{config.name}: training split",
    )
    (run_dir / BOXES).unlink(missing_ok=True)
    if boxes is not None:
        save_boxes(boxes, run_dir / BOXES)
        outputs.append(BOXES)
    if skipped:
        table = pd.DataFrame(skipped, columns=["image", "reason"])
        atomic_write_text(run_dir / "skipped_images.csv", table.to_csv(index=False))
        outputs.append("skipped_images.csv")
    RunDir(run_dir).write_record(
        "prepare", {"config_digest": p.info["config_digest"], "outputs": outputs}, started
    )
