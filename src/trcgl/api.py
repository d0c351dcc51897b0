"""The Python entry point: ``trcgl.load(folder or hub id)`` → a :class:`Predictor`.

    import trcgl
    model = trcgl.load("runs/demo/model")          # or a hub repository: "org/name"
    table = model.predict(["a.png", "b.dcm"], binary=True)
    model.push_to_hub("org/name")                  # the folder and a model card

A :class:`Predictor` is a model folder ready for inference: the classifier, the input path it
was trained with (size, normalisation; :class:`~trcgl.evaluation.inference.ModelInput`) and
the decisions the folder keeps (``decisions.json``: per-class thresholds tuned on validation).
It takes image files (PNG, JPEG, TIFF, 16-bit PNG, DICOM), PIL images and arrays of any size
and channel count, and returns one row per image. A hub repository id is fetched with
``huggingface_hub.snapshot_download`` (only the model folder's files), from the local hub cache
when offline. This module sits beside the command line, above the libraries it uses.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from trcgl.data.images import read_image
from trcgl.errors import DataError
from trcgl.evaluation.inference import binary_columns, model_transform, probabilities
from trcgl.evaluation.inference import calibrated as calibrate
from trcgl.models.base import DECISIONS_FILE, EVALUATION_FILE, Classifier, load_model

__all__ = ["Predictor", "load", "model_card"]

#: The files of a model folder that go to and come from the hub.
HUB_FILES = [
    "config.json",
    "model.safetensors",
    "label_graph.safetensors",
    DECISIONS_FILE,
    EVALUATION_FILE,
    "README.md",
]


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

    def __init__(
        self,
        model: Classifier,
        device: str | torch.device | None = None,
        folder: Path | None = None,
    ) -> None:
        self.folder = folder
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
        calibrated: bool = False,
        tta: str | None = None,
        batch_size: int = 32,
    ) -> pd.DataFrame:
        """Probabilities for ``images`` (one path, PIL image or array, or a sequence of them):
        a column ``image`` (the path, or ``image <i>``) and one per class; with ``binary``, the
        0/1 columns ``pred:<class>`` at the tuned thresholds; with ``calibrated``, the
        probabilities temperature-scaled by the folder's T (decisions unchanged);
        ``tta="hflip"`` averages each image with its mirror."""
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
        shown = calibrate(p, self.model) if calibrated else p
        frame = pd.DataFrame(shown.astype(np.float64), columns=list(self.classes))
        frame.insert(0, "image", [_name(item, i) for i, item in enumerate(items)])
        if binary:
            assert self.thresholds is not None
            frame = pd.concat([frame, binary_columns(p, self.classes, self.thresholds)], axis=1)
        return frame

    def push_to_hub(self, repo_id: str, *, private: bool = True, token: str | None = None) -> str:
        """Upload the model folder and a model card (:func:`model_card`) to the hub repository
        ``repo_id`` (created if missing; private unless ``private=False``); returns its URL."""
        from huggingface_hub import HfApi

        if self.folder is None:
            raise DataError("this model was not loaded from a folder; nothing to upload")
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp)
            for name in HUB_FILES:
                if (self.folder / name).is_file() and name != "README.md":
                    shutil.copy2(self.folder / name, staged / name)
            (staged / "README.md").write_text(model_card(self.model, repo_id), encoding="utf-8")
            api.upload_folder(
                repo_id=repo_id, folder_path=str(staged), commit_message="trcgl model folder"
            )
        return f"https://huggingface.co/{repo_id}"


def model_card(model: Classifier, repo_id: str) -> str:
    """The hub README of a model folder: what it predicts, its input, its decisions."""
    from trcgl import __version__

    decisions = model.decisions or {}
    thresholds = decisions.get("thresholds") or {}
    groups = decisions.get("groups") or {}
    group_of = {c: g for g, members in groups.items() for c in members}
    pre = model.preprocessing or {}
    rows = "\n".join(
        f"| {c} | {group_of.get(c, '–')} | "
        + (f"{thresholds[c]:.4f}" if c in thresholds else "–")
        + " |"
        for c in model.classes
    )
    tuned = decisions.get("tuned_on") or {}
    return f"""---
library_name: trcgl
tags: [chest-x-ray, multi-label-classification, long-tailed, medical-imaging]
pipeline_tag: image-classification
---

# {repo_id}

{model.display_name()}: multi-label chest X-ray classification with trcgl {__version__}
({len(model.classes)} classes). Not a medical device; for research.

```python
import trcgl
model = trcgl.load("{repo_id}")
table = model.predict(["image.png"], binary=True)
```

Input: a radiograph of any size and format, resized (Lanczos) to {pre.get("image_size", "?")} px
and normalised as in training (`config.json`, `preprocessing`). Output: one probability per
class; `binary=True` adds 0/1 decisions at the thresholds below, tuned per class (F1-optimal)
on the validation split of `{tuned.get("run", "?")}` ({tuned.get("images", "?")} images,
{tuned.get("patients", "?")} patients). Calibration temperature:
{decisions.get("temperature", "–")}.

| class | frequency group | threshold |
|---|---|---:|
{rows}
{_card_metrics(model.evaluation or {})}{_card_provenance(model.provenance)}"""


def _card_metrics(evaluation: dict[str, Any]) -> str:
    """The card's metrics: each evaluated split (test first), overall and per frequency group,
    with the bootstrap intervals where they were computed."""
    from trcgl.evaluation.bootstrap import format_interval

    if not evaluation:
        return "\nNo metrics yet: `trcgl evaluate` records them in `evaluation.json`.\n"
    parts = []
    for split in sorted(evaluation, key=lambda s: (s != "test", s)):
        e = evaluation[split]
        ci = e.get("intervals") or {}
        lines = []
        for subset, m in e["summary"].items():
            if not m.get("n_classes"):
                continue
            cells = []
            for key in ("mAP", "mAUC", "macro_F1"):
                low, high = (ci.get(subset) or {}).get(key, (None, None))
                interval = format_interval(low, high, 3) if low is not None else ""
                cells.append(f"{m[key]:.4f} {interval}".strip())
            lines.append(f"| {subset} | {m['n_classes']} | " + " | ".join(cells) + " |")
        boot = e.get("bootstrap") or {}
        note = (
            f" 95 % intervals: patient-level bootstrap, {boot['resamples']:,} resamples."
            if boot
            else ""
        )
        loc = e.get("localisation")
        if loc and loc.get("classes"):
            note += (
                f" Class maps against radiologist boxes ({loc['pairs']} image-class pairs): "
                f"pointing {loc['macro_pointing']:.3f}, mass inside {loc['macro_mass_inside']:.3f}"
                f" (chance {loc['macro_chance']:.3f})."
            )
        parts.append(
            f"\n## Metrics on the {split} split of `{e.get('run', '?')}`\n\n"
            f"{e.get('images', '?')} images of {e.get('patients', '?')} patients; F1 at 0.5."
            f"{note}\n\n| subset | classes | mAP | mAUC | F1 |\n|---|---:|---:|---:|---:|\n"
            + "\n".join(lines)
            + "\n"
        )
    return "".join(parts)


def _card_provenance(provenance: dict[str, Any] | None) -> str:
    if not provenance:
        return ""
    images = provenance.get("images") or {}
    return (
        "\n## Training\n\n"
        f"{images.get('train_real', '?')} real and {images.get('train_synthetic', 0)} synthetic "
        f"training images, {images.get('val', '?')} validation images "
        f"({images.get('patients', '?')} patients). Training data digest "
        f"`{provenance.get('data_digest', '?')[:16]}`, configuration digest "
        f"`{provenance.get('config_digest', '?')[:16]}` (the configuration is in `config.json`, "
        "`provenance`).\n"
    )


def _from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except GatedRepoError as exc:
        raise DataError(f"{repo_id} is gated: log in with `hf auth login` ({exc})") from exc
    except RepositoryNotFoundError as exc:
        raise DataError(
            f"no model repository {repo_id!r} on the hub (or it is private: `hf auth login`)"
        ) from exc
    except LocalEntryNotFoundError as exc:
        raise DataError(
            f"{repo_id} is not in the local hub cache and the hub cannot be reached (offline, "
            f"HF_HUB_OFFLINE=1?): download it once with `hf download {repo_id}`"
        ) from exc


def load(source: str | Path, device: str | torch.device | None = None) -> Predictor:
    """A model folder (written by ``trcgl train``) or a hub repository id (``org/name``) as a
    :class:`Predictor`."""
    path = Path(source).expanduser()
    if not path.is_dir():
        text = str(source)
        if text.count("/") == 1 and not text.startswith((".", "/", "~")) and not path.exists():
            path = _from_hub(text)
        else:
            raise DataError("no such model folder", path=path)
    return Predictor(load_model(path), device, folder=path)
