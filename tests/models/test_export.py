"""``trcgl export``: the exported model predicts the vendored NIH images as PyTorch does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import invoke
from trcgl.data.images import read_image
from trcgl.evaluation.inference import model_transform
from trcgl.models.base import load_model


@pytest.fixture(scope="module")
def batch(trained_run, nih_sample):
    run, _ = trained_run
    model = load_model(run / "model")
    transform = model_transform(model)
    paths = sorted((nih_sample / "images").iterdir())[:5]
    images = torch.stack([transform(read_image(p)) for p in paths])
    with torch.no_grad():
        out = model(images, return_attention=True)
    return run / "model", images, torch.sigmoid(out["logits"]).numpy(), out["attention"].numpy()


def test_onnx_equals_pytorch_on_real_images(batch, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    folder, images, probs, attention = batch
    out = tmp_path / "model.onnx"
    result = invoke("export", "--model", str(folder), "--out", str(out), "--attention")
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "attention"]
    got_p, got_a = session.run(None, {"images": images.numpy()})  # batch 5, exported with 2
    np.testing.assert_allclose(got_p, probs, atol=1e-4)
    np.testing.assert_allclose(got_a, attention, atol=1e-4)
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    model = load_model(folder)
    assert meta["classes"] == list(model.classes)
    assert meta["input"]["shape"] == ["batch", 3, 32, 32]
    assert meta["outputs"] == ["probabilities", "attention"]


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program"])
def test_torchscript_and_exported_program_equal_pytorch(batch, tmp_path, fmt):
    folder, images, probs, _ = batch
    out = tmp_path / ("model.pt" if fmt == "torchscript" else "model.pt2")
    result = invoke("export", "--model", str(folder), "--out", str(out), "--format", fmt)
    assert result.exit_code == 0, result.output
    if fmt == "torchscript":
        loaded = torch.jit.load(str(out))
        (got,) = loaded(images)
    else:
        (got,) = torch.export.load(str(out)).module()(images)
    np.testing.assert_allclose(got.detach().numpy(), probs, atol=1e-5)


def test_an_unknown_format_is_a_clear_error(batch, tmp_path):
    folder, *_ = batch
    result = invoke(
        "export", "--model", str(folder), "--out", str(tmp_path / "m.x"), "--format", "tflite"
    )
    assert result.exit_code == 2 and "unknown export format 'tflite'" in result.output
