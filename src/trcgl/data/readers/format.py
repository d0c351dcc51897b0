"""What a registered data format (a ``data.format`` value) says about itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from trcgl.config import DataConfig
    from trcgl.data.manifest import Manifest
    from trcgl.data.readers.csv_checks import ReadResult


@dataclass(frozen=True)
class DataFormat:
    """One label-file layout: how to read it and what the rest of trcgl needs to know of it.

    A reader module registers one with ``DATA_FORMATS.add(name, DataFormat(...))``
    (:mod:`trcgl.registry`); ``trcgl prepare`` reads through it, the diffusion stages take its
    prompt style, and the configuration checks ``data.labels_csv`` / ``data.classes``
    against it before any work starts.
    """

    #: ``read(label_csv, classes, data_config) → ReadResult``: the one manifest.
    read: Callable[[Path, tuple[str, ...], DataConfig], ReadResult]
    #: One line for ``trcgl formats`` and the docs.
    description: str
    #: The class vocabulary used when neither ``data.classes`` nor ``data.vocabulary`` is set;
    #: ``None``: the user must give one.
    vocabulary: str | None = None
    #: File name in ``torchxrayvision/data/`` read when ``data.labels_csv`` is not set;
    #: ``None``: ``data.labels_csv`` is required.
    installed_csv: str | None = None
    #: The shipped raw finding → class table (:func:`trcgl.data.vocab.load_mapping`) read when
    #: ``data.mapping`` is not set; ``None``: the format's file has classes, not raw findings,
    #: and ``data.mapping`` must stay unset.
    mapping: str | None = None
    #: Prompt style of the diffusion prompts (:data:`trcgl.diffusion.prompts.DATASETS`):
    #: ``padchest`` relates report localisations to labels; the others use labels and view.
    prompt_style: str = "plain"
    #: ``read_boxes(box_csv, manifest, data_config) → box table`` (:mod:`trcgl.data.boxes`)
    #: where the data set has radiologist boxes, or ``None`` when they cannot be placed (a
    #: reason warned); ``None``: it has none.
    read_boxes: Callable[[Path, Manifest, DataConfig], pd.DataFrame | None] | None = None
    #: File name in ``torchxrayvision/data/`` read when ``data.boxes_csv`` is not set.
    installed_boxes: str | None = None
    #: The boxes are rows of the label CSV itself (VinDr-CXR): without ``data.boxes_csv`` the
    #: label CSV is read for them.
    boxes_from_labels: bool = False
    #: The reader fills the manifest's ``split`` with the data set's published split, which
    #: ``split.given: true`` keeps instead of trcgl's patient-level split.
    split: bool = False

    def mapping_table(self, data: DataConfig) -> str | None:
        """The mapping table a data section reads: ``data.mapping`` or the format's own."""
        return data.mapping or self.mapping
