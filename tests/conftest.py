"""Shared fixtures: real label files (vendored NIH sample, PadChest CSV from torchxrayvision)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from importlib import resources
from pathlib import Path

import pytest

from trcgl.data.readers import (
    PADCHEST_CSV_NAME,
    ReadResult,
    installed_label_csv,
    read_padchest,
)


@pytest.fixture(scope="session")
def nih_sample() -> Path:
    """The vendored real NIH sample folder (``Data_Entry_sample.csv`` + ``images/``)."""
    return Path(str(resources.files("trcgl.resources").joinpath("nih_sample")))


@pytest.fixture(scope="session")
def padchest_csv() -> Path:
    """The real 160,861-row PadChest label CSV shipped in the torchxrayvision wheel."""
    path = installed_label_csv(PADCHEST_CSV_NAME)
    assert path is not None, "torchxrayvision (a trcgl dependency) ships the PadChest CSV"
    return path


@pytest.fixture(scope="session")
def padchest(padchest_csv: Path) -> ReadResult:
    """The real PadChest CSV read once with the default mapping."""
    return read_padchest(padchest_csv)
