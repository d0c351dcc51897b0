"""`trcgl evaluate`, `predict` and `explain` on a tiny model trained on real NIH images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from tests.conftest import invoke


@pytest.fixture(scope="module")
def evaluated(trained_run, tmp_path_factory):
    run, _ = trained_run
    copy = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(run, copy)
    result = invoke("evaluate", "--run-dir", str(copy))
    assert result.exit_code == 0, result.output
    return copy, result.output


def test_evaluate_writes_metrics_equal_to_sklearn(evaluated):
    run, output = evaluated
    out = run / "evaluation" / "val"
    metrics = json.loads((out / "metrics.json").read_text())
    preds = pd.read_csv(out / "predictions.csv")
    classes = [c for c in preds.columns if c != "ImageID" and not c.startswith("label:")]
    assert classes == ["Atelectasis", "Effusion", "Infiltration", "Nodule", "No Finding"]
    y = preds[[f"label:{c}" for c in classes]].to_numpy()
    p = preds[classes].to_numpy()
    used = [j for j in range(len(classes)) if y[:, j].any() and not y[:, j].all()]
    ap = np.mean([average_precision_score(y[:, j], p[:, j]) for j in used])
    auc = np.mean([roc_auc_score(y[:, j], p[:, j]) for j in used])
    assert metrics["summary"]["overall"]["mAP"] == pytest.approx(ap, abs=1e-9)
    assert metrics["summary"]["overall"]["mAUC"] == pytest.approx(auc, abs=1e-9)
    assert metrics["method"] == "TRCGL-Net (convnextv2_atto)"
    per_class = pd.read_csv(out / "per_class.csv")
    assert list(per_class["class"]) == classes and "threshold" in per_class
    tables = (out / "tables.md").read_text()
    assert "Table 1 layout" in tables and "| head mAP | medium mAP | tail mAP |" in tables
    assert "optimistic" in tables
    assert "overall" in output and "tail" in output


def test_predict_a_folder_in_the_submission_layout(trained_run, nih_sample, tmp_path):
    run, _ = trained_run
    images = tmp_path / "images"
    images.mkdir()
    names = sorted(p.name for p in (nih_sample / "images").iterdir())[:10]
    for name in names:
        shutil.copy(nih_sample / "images" / name, images / name)
    out = tmp_path / "preds.csv"
    result = invoke("predict", "--model", str(run / "model"), str(images), "--out", str(out))
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert frame.columns[0] == "ImageID" and list(frame["ImageID"]) == names
    assert frame.shape == (10, 6)
    values = frame.iloc[:, 1:].to_numpy()
    assert ((values >= 0) & (values <= 1)).all()
    # a corrupt image: named, or skipped and listed
    (images / names[4]).write_bytes(b"not a png")
    result = invoke("predict", "--model", str(run / "model"), str(images), "--out", str(out))
    assert result.exit_code == 2 and names[4] in result.output.replace("\n", "")
    result = invoke(
        "predict", "--model", str(run / "model"), str(images), "--out", str(out), "--skip-corrupt"
    )
    assert result.exit_code == 0
    assert len(pd.read_csv(out)) == 9
    assert names[4] in (tmp_path / "preds_skipped.txt").read_text()


def test_predict_from_a_csv_with_wrong_sizes_and_rgb(trained_run, tmp_path):
    from PIL import Image

    run, _ = trained_run
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(tmp_path / "b.png")
    pd.DataFrame({"ImageID": ["a.jpg", "b.png"]}).to_csv(tmp_path / "list.csv", index=False)
    out = tmp_path / "p.csv"
    result = invoke(
        "predict", "--model", str(run / "model"), str(tmp_path / "list.csv"), "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    assert list(pd.read_csv(out)["ImageID"]) == ["a.jpg", "b.png"]


def test_explain_writes_fig4_and_fig5(evaluated, nih_sample, tmp_path):
    run, _ = evaluated
    image = nih_sample / "images" / "00000001_001.png"
    result = invoke(
        "explain",
        "--model",
        str(run / "model"),
        str(image),
        "--out",
        str(tmp_path),
        "--top-k",
        "2",
        "--run-dir",
        str(run),
    )
    assert result.exit_code == 0, result.output
    for name in ("00000001_001_regions.png", "00000001_001_confidence.png"):
        assert (tmp_path / name).stat().st_size > 5000


def test_evaluate_without_a_model_folder_is_a_clear_error(prepared):
    run, _ = prepared
    result = invoke("evaluate", "--run-dir", str(run))
    assert result.exit_code == 2, result.output
    assert "has no trained model" in result.output and "trcgl train" in result.output
    other = invoke("evaluate", "--run-dir", str(run), "--model", str(run))
    assert other.exit_code == 2 and "not a model folder" in other.output


def test_explain_a_model_without_attention_maps_gives_fig5_only(nih_sample, tmp_path):
    from trcgl.evaluation.explain import explain_images
    from trcgl.models.baselines import TimmClassifier

    model = TimmClassifier(classes=["a", "b", "c"], backbone="convnextv2_atto", pretrained=None)
    model.preprocessing = {"image_size": 32}
    model.save_pretrained(tmp_path / "m")
    from trcgl.models import load_model

    image = nih_sample / "images" / "00000001_000.png"
    with pytest.warns(UserWarning, match="no class attention maps"):
        written = explain_images(load_model(tmp_path / "m"), [image], tmp_path / "out")
    assert [p.name for p in written] == ["00000001_000_confidence.png"]
