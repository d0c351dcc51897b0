"""`trcgl predict` on a mixed folder: every probability equals sigmoid(model(x)) with x made
here, independently, the way a training image reaches the model (decode → Lanczos resize as
the image cache does → normalise)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from PIL import Image

from tests.conftest import invoke
from tests.data.test_images import write_dicom
from trcgl.models.base import load_model


def _expected_input(gray: np.ndarray, size: int, mean, std) -> torch.Tensor:
    small = Image.fromarray(gray).resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    x = np.asarray(small, dtype=np.float64) / 255.0
    channels = [(x - m) / s for m, s in zip(mean, std, strict=True)]
    return torch.tensor(np.stack(channels), dtype=torch.float32)


def _window16(u16: np.ndarray) -> np.ndarray:
    """PadChest's 16-bit rule: the 0.5–99.5 percentile range mapped onto 0–255."""
    lo, hi = np.percentile(u16.astype(np.float64), [0.5, 99.5])
    return np.clip(np.rint((u16 - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def _minmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    return np.clip(np.rint((a - a.min()) * 255.0 / (a.max() - a.min())), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mixed_folder(nih_sample, tmp_path_factory):
    """PNG, JPEG, 16-bit PNG, TIFF, DICOM with and without a suffix, equal names in two
    subfolders, and files that are not images; with what the model should see of each."""
    folder = tmp_path_factory.mktemp("mixed")
    names = sorted(p.name for p in (nih_sample / "images").iterdir())[:8]
    real = [np.asarray(Image.open(nih_sample / "images" / n).convert("L")) for n in names]
    gray: dict[str, np.ndarray] = {}

    Image.fromarray(real[0]).save(folder / "a.png")
    gray["a.png"] = real[0]
    Image.fromarray(real[1]).save(folder / "b.jpg", quality=90)
    gray["b.jpg"] = np.asarray(Image.open(folder / "b.jpg").convert("L"))
    u16 = real[2].astype(np.uint16) * 16 + 7  # 12 bits used, as in PadChest
    Image.fromarray(u16).save(folder / "c16.png")
    assert Image.open(folder / "c16.png").mode.startswith("I")
    gray["c16.png"] = _window16(u16)
    Image.fromarray(real[3]).save(folder / "d.tif")
    gray["d.tif"] = real[3]
    write_dicom(folder / "e.dcm", real[4].astype(np.uint16) * 16)
    gray["e.dcm"] = _minmax(real[4].astype(np.uint16) * 16)
    write_dicom(folder / "f", real[5].astype(np.uint16) * 16, photometric="MONOCHROME1")
    assert pydicom.dcmread(folder / "f").PhotometricInterpretation == "MONOCHROME1"
    gray["f"] = 255 - _minmax(real[5].astype(np.uint16) * 16)  # MONOCHROME1: inverted
    for sub, img in (("sub1", real[6]), ("sub2", real[7])):
        (folder / sub).mkdir()
        Image.fromarray(img).save(folder / sub / "x.png")
        gray[f"{sub}/x.png"] = img
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "labels.csv").write_text("image,labels\n")
    Image.fromarray(real[0]).save(folder / ".hidden.png")
    return folder, gray


def test_predict_a_mixed_folder_equals_the_model_on_inputs_made_here(
    trained_run, mixed_folder, tmp_path
):
    run, _ = trained_run
    folder, gray = mixed_folder
    out = tmp_path / "preds.csv"
    result = invoke("predict", "--model", str(run / "model"), str(folder), "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame["ImageID"]) == sorted(gray)  # relative paths: sub1/x.png ≠ sub2/x.png

    model = load_model(run / "model").eval()
    pre = model.preprocessing
    mean, std = pre.get("mean") or model.normalization[0], pre.get("std") or model.normalization[1]
    x = torch.stack(
        [_expected_input(gray[i], pre["image_size"], mean, std) for i in frame["ImageID"]]
    )
    with torch.no_grad():
        expected = torch.sigmoid(model(x)["logits"]).numpy()
    got = frame[list(model.classes)].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got[-2], got[-1])  # the two x.png are different images


def test_a_prediction_csv_path_that_leaves_its_root_is_refused(trained_run, tmp_path):
    run, _ = trained_run
    listing = tmp_path / "list.csv"
    pd.DataFrame({"image": ["ok.png", "../../etc/hostname"]}).to_csv(listing, index=False)
    result = invoke("predict", "--model", str(run / "model"), str(listing), "--out", "p.csv")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "'../../etc/hostname' leaves the image root" in text
    assert "list.csv" in text and "row 2" in text and "image" in text
