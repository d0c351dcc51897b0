"""Shared fixtures: real label files (vendored NIH sample; PadChest CSV and OpenI reports from
torchxrayvision)."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from trcgl.data.readers import (
    OPENI_REPORTS_NAME,
    PADCHEST_CSV_NAME,
    ReadResult,
    installed_label_csv,
    read_openi,
    read_padchest,
)


@pytest.fixture(scope="session")
def nih_sample() -> Path:
    """The vendored real NIH sample folder (``Data_Entry_sample.csv`` + ``images/``)."""
    return Path(str(resources.files("trcgl.resources").joinpath("nih_sample")))


def wheel_csv(name: str) -> Path:
    """A label file shipped in the installed torchxrayvision wheel (a trcgl dependency)."""
    path = installed_label_csv(name)
    assert path is not None, f"torchxrayvision (a trcgl dependency) ships {name}"
    return path


def chexpert_standin(root: Path, nih_sample: Path, n: int = 80) -> tuple[Path, Path]:
    """A CheXpert-layout data set: ``n`` real frontal rows of CheXpert's ``train.csv`` whose
    images are NIH sample images saved as JPEG at each row's ``Path``. Returns the label CSV
    and the image root."""
    from PIL import Image

    from trcgl.data.readers import CHEXPERT_CSV_NAME

    rows = pd.read_csv(wheel_csv(CHEXPERT_CSV_NAME), nrows=5 * n, dtype=str)
    rows = rows[rows["Frontal/Lateral"] == "Frontal"].head(n)
    rows.to_csv(root / "chexpert.csv", index=False)
    names = sorted(p.name for p in (nih_sample / "images").iterdir())[-n:]
    for rel, name in zip(rows["Path"], names, strict=True):
        target = root / "chexpert_images" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.open(nih_sample / "images" / name).convert("L").save(target, "JPEG")
    return root / "chexpert.csv", root / "chexpert_images"


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


@pytest.fixture(scope="session")
def openi() -> ReadResult:
    """The real OpenI reports (3,955, 7,470 images) read once with the shipped MeSH table."""
    return read_openi(wheel_csv(OPENI_REPORTS_NAME))


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test: the tiny diffusion models are faster so on 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def invoke(*args: str):
    """Run the ``trcgl`` command line in-process (exceptions propagate)."""
    from typer.testing import CliRunner

    from trcgl.cli import app

    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def two_processes(*args: str):
    """``torchrun --nproc_per_node 2 -m trcgl.cli <args>`` on the CPU (gloo, one thread per
    process): what ``accelerate launch`` does on two GPUs. Fails the test if it fails."""
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "trcgl.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


#: A tiny but complete training configuration (convnextv2_atto at 32 px, 3 steps an epoch).
TINY_TRAIN = [
    "images.size=32",
    "images.workers=1",
    "model.backbone=convnextv2_atto",
    "model.pretrained=null",
    "model.embed_dim=16",
    "model.hidden_dim=32",
    "train.batch_size=8",
    "train.warmup_epochs=1",
    "train.epochs=2",
    "train.max_steps_per_epoch=3",
    "train.num_workers=0",
    "train.lr_warmup_epochs=0.5",
    "train.ema_decay=0.9",
]
#: A tiny generator at 32 px with a few steps of everything, at most 3 images per tail class,
#: and a filter that keeps whatever is not a near-copy.
TINY_DIFFUSION = [
    "diffusion.image_size=32",
    "diffusion.train_images=tail",
    "diffusion.unet_mode=full",
    "diffusion.vae_steps=3",
    "diffusion.steps=4",
    "diffusion.batch_size=4",
    "diffusion.checkpoint_every=2",
    "diffusion.max_per_class=3",
    "diffusion.sample_steps=2",
    "diffusion.sample_batch_size=4",
    "diffusion.filter_epochs=1",
    "diffusion.prob_threshold=0.0",
]
SMALL_CLASSES = ["Atelectasis", "Effusion", "Infiltration", "Nodule", "No Finding"]


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, nih_sample) -> tuple[Path, list[str]]:
    """A prepared run over 120 real NIH images, 5 classes (a plain CSV), and its overrides."""
    from trcgl.config import load_config
    from trcgl.data.readers import read_nih
    from trcgl.stages.prepare import prepare

    root = tmp_path_factory.mktemp("nih")
    entries = read_nih(nih_sample / "Data_Entry_sample.csv").manifest.frame.head(120)
    frame = entries[["image", "patient_id"]].copy()
    y = entries[SMALL_CLASSES].to_numpy()
    frame["labels"] = ["|".join(c for c, v in zip(SMALL_CLASSES, r, strict=True) if v) for r in y]
    frame.to_csv(root / "labels.csv", index=False)
    overrides = [
        "data.format=plain",
        f"data.labels_csv={root / 'labels.csv'}",
        f"data.image_root={nih_sample / 'images'}",
        f"data.classes=[{', '.join(SMALL_CLASSES)}]",
        "data.vocabulary=null",
        "groups.head=0.6",
        "groups.tail=0.4",
        *TINY_TRAIN,
    ]
    run = root / "run"
    prepare(load_config("nih-demo", overrides), run, progress=False)
    return run, overrides


@pytest.fixture(scope="session")
def trained_run(prepared, tmp_path_factory) -> tuple[Path, list[str]]:
    """The prepared run above, trained (1 + 2 tiny epochs). Treat as read-only."""
    import shutil

    from trcgl.config import load_config
    from trcgl.stages.train import train

    run, overrides = prepared
    trained = tmp_path_factory.mktemp("trained") / "run"
    shutil.copytree(run, trained)
    train(load_config("nih-demo", [*overrides, "diffusion.enabled=false"]), trained, progress=False)
    return trained, overrides


@contextlib.contextmanager
def killed_after_checkpoint(monkeypatch, module, name: str, at: int):
    """Inside the block, ``module.<name>`` (a checkpoint writer called as
    ``name(directory, step_or_epoch, ...)``) saves checkpoint ``at`` and then raises
    :class:`KeyboardInterrupt`, as a kill right after it would; the block expects it."""
    original = getattr(module, name)

    def save_then_die(directory, when, *args, **kwargs):
        path = original(directory, when, *args, **kwargs)
        if when == at:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(module, name, save_then_die)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield
    finally:
        monkeypatch.setattr(module, name, original)
