"""`trcgl evaluate`, `predict` and `explain` on a tiny model trained on real NIH images."""

from __future__ import annotations

import json
import re
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


def test_evaluate_gives_patient_bootstrap_intervals(evaluated):
    from trcgl.data.manifest import Manifest
    from trcgl.evaluation.bootstrap import bootstrap, intervals

    run, output = evaluated
    out = run / "evaluation" / "val"
    metrics = json.loads((out / "metrics.json").read_text())
    boot = metrics["bootstrap"]
    frame = Manifest.load(run / "manifest.parquet").frame
    val = frame[frame["split"] == "val"]
    assert boot == {
        "unit": "patient",
        "resamples": 1000,
        "seed": 0,
        "level": 0.95,
        "patients": val["patient_id"].nunique(),
        "empty_classes": "exclude",
    }
    for subset, stats in metrics["intervals"].items():
        low, high = stats["mAP"]
        assert low <= metrics["summary"][subset]["mAP"] <= high, subset
    # The same numbers from the predictions written beside them (seeded, so reproducible).
    preds = pd.read_csv(out / "predictions.csv")
    classes = [c for c in preds.columns if c != "ImageID" and not c.startswith("label:")]
    per_class = pd.read_csv(out / "per_class.csv")
    info = json.loads((run / "label_stats.json").read_text())
    again = bootstrap(
        preds[[f"label:{c}" for c in classes]].to_numpy(),
        preds[classes].to_numpy(),
        val["patient_id"].tolist(),
        classes,
        {g: info["groups"][g] for g in ("head", "medium", "tail")},
        per_class["threshold"].to_numpy(),
        n_resamples=1000,
        seed=0,
    )
    expected = intervals(again)
    for subset, stats in metrics["intervals"].items():
        for metric, pair in stats.items():
            assert pair == pytest.approx(expected[subset][metric], abs=1e-6), (subset, metric)
    assert "95 % intervals (patient-level bootstrap" in (out / "tables.md").read_text()
    assert "95 % intervals" in output and re.search(r"\[0\.\d{3}, [01]\.\d{3}\]", output)


def test_compare_refuses_models_evaluated_on_other_images(evaluated, tmp_path):
    from trcgl.errors import DataError
    from trcgl.stages.compare import compare_runs

    run, _ = evaluated
    other = tmp_path / "other"
    shutil.copytree(run, other)
    preds = other / "evaluation" / "val" / "predictions.csv"
    frame = pd.read_csv(preds)
    frame.iloc[:-1].to_csv(preds, index=False)
    with pytest.raises(DataError, match="other images than"):
        compare_runs([run, other])
    with pytest.raises(DataError, match="not been evaluated on test"):
        compare_runs([run, other], split="test")
    # The same model twice: no difference, p = 1.
    same = tmp_path / "same"
    shutil.copytree(run, same)
    result = compare_runs([run, same], n_resamples=200)
    assert (result.frame["difference"] == 0).all() and (result.frame["p"] == 1).all()
    assert set(result.frame["subset"]) <= {"overall", "head", "medium", "tail"}
    assert result.csv == run / "evaluation" / "val" / "comparison.csv" and result.markdown.is_file()


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


def test_the_model_folder_keeps_its_thresholds_and_predict_applies_them(
    evaluated, nih_sample, tmp_path
):
    run, _ = evaluated
    decisions = json.loads((run / "model" / "decisions.json").read_text())
    per_class = pd.read_csv(run / "evaluation" / "val" / "per_class.csv")
    assert decisions["thresholds"] == dict(
        zip(per_class["class"], per_class["threshold"], strict=True)
    )
    assert decisions["tuned_on"]["split"] == "val" and decisions["tuned_on"]["images"] > 0
    info = json.loads((run / "label_stats.json").read_text())
    assert decisions["groups"] == {g: info["groups"][g] for g in ("head", "medium", "tail")}
    images = tmp_path / "images"
    images.mkdir()
    for name in sorted(p.name for p in (nih_sample / "images").iterdir())[:6]:
        shutil.copy(nih_sample / "images" / name, images / name)
    out = tmp_path / "preds.csv"
    args = ["predict", "--model", str(run / "model"), str(images), "--out", str(out)]
    result = invoke(*args, "--binary", "--device", "cpu")
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    classes = list(decisions["thresholds"])
    assert list(frame.columns) == ["ImageID", *classes, *(f"pred:{c}" for c in classes)]
    for c in classes:
        expected = (frame[c] >= decisions["thresholds"][c]).astype(int)
        assert (frame[f"pred:{c}"] == expected).all()
    # Test-time flips: the mean of the image's and its mirror's probabilities.
    result = invoke(*args, "--tta", "hflip")
    assert result.exit_code == 0, result.output
    flipped = pd.read_csv(out)
    assert not np.allclose(flipped[classes].to_numpy(), frame[classes].to_numpy())
    assert invoke(*args, "--tta", "vflip").exit_code == 2
    # A model folder without decisions: --binary says how to get them.
    bare = tmp_path / "bare"
    shutil.copytree(run / "model", bare)
    (bare / "decisions.json").unlink()
    result = invoke("predict", "--model", str(bare), str(images), "--out", str(out), "--binary")
    assert result.exit_code == 2 and "trcgl evaluate" in result.output


def test_python_api_predicts_paths_pil_images_and_arrays_alike(evaluated, nih_sample):
    from PIL import Image

    import trcgl
    from trcgl.errors import DataError
    from trcgl.evaluation.inference import list_images, predict_files
    from trcgl.models.base import load_model

    run, _ = evaluated
    paths = sorted((nih_sample / "images").iterdir())[:4]
    model = trcgl.load(run / "model", device="cpu")
    by_path = model.predict(paths, binary=True)
    assert list(by_path["image"]) == [str(p) for p in paths]
    assert list(by_path.columns[1:6]) == list(model.classes)
    reference = predict_files(load_model(run / "model"), list_images(paths[0].parent).head(4))
    np.testing.assert_allclose(
        by_path[list(model.classes)].to_numpy(), reference.probabilities, atol=1e-6
    )
    by_pil = model.predict([Image.open(p) for p in paths])
    by_array = model.predict(np.asarray(Image.open(paths[0]).convert("RGB")))
    np.testing.assert_allclose(by_pil[list(model.classes)], by_path[list(model.classes)], atol=1e-6)
    np.testing.assert_allclose(
        by_array[list(model.classes)].to_numpy()[0],
        by_path[list(model.classes)].to_numpy()[0],
        atol=1e-2,
    )
    assert by_array["image"].tolist() == ["image 0"]
    with pytest.raises(DataError, match="no such model folder"):
        trcgl.load(run / "nowhere")


def test_evaluate_reports_calibration_and_keeps_the_temperature(evaluated):
    from trcgl.evaluation.calibration import expected_calibration_error, fit_temperature

    run, output = evaluated
    out = run / "evaluation" / "val"
    cal = json.loads((out / "metrics.json").read_text())["calibration"]
    preds = pd.read_csv(out / "predictions.csv")
    classes = [c for c in preds.columns if c != "ImageID" and not c.startswith("label:")]
    y, p = preds[[f"label:{c}" for c in classes]].to_numpy(), preds[classes].to_numpy()
    np.testing.assert_allclose(
        [cal["ece"][c] for c in classes], expected_calibration_error(y, p, cal["bins"]), atol=1e-6
    )
    assert cal["temperature"] == pytest.approx(fit_temperature(y, p), rel=1e-3)  # val = val
    decisions = json.loads((run / "model" / "decisions.json").read_text())
    assert decisions["temperature"] == pytest.approx(cal["temperature"])
    assert "## Calibration" in (out / "tables.md").read_text() and "macro ECE" in output


def _hub_entry(cache, repo, folder):
    """A model folder in a hub cache laid out as huggingface_hub lays it out."""
    commit = "1" * 40
    entry = cache / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text(commit)
    for path in folder.iterdir():
        shutil.copy(path, snapshot / path.name)


def test_load_a_hub_id_from_the_local_cache_and_push_a_model_card(
    evaluated, nih_sample, tmp_path, monkeypatch
):
    import huggingface_hub
    import huggingface_hub.constants as constants

    import trcgl
    from trcgl.errors import DataError

    run, _ = evaluated
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="hf download someone/absent"):
        trcgl.load("someone/absent")
    uploads = []

    class FakeApi:  # records what push_to_hub sends instead of reaching the network
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private, exist_ok):
            uploads.append(("create", repo_id, private))

        def upload_folder(self, repo_id, folder_path, commit_message):
            target = tmp_path / "uploaded"
            shutil.copytree(folder_path, target)
            uploads.append(("upload", repo_id, sorted(p.name for p in target.iterdir())))

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    local = trcgl.load(run / "model", device="cpu")
    assert local.push_to_hub("org/trcgl-demo") == "https://huggingface.co/org/trcgl-demo"
    assert uploads[0] == ("create", "org/trcgl-demo", True)
    assert uploads[1][1:] == (
        "org/trcgl-demo",
        [
            "README.md",
            "config.json",
            "decisions.json",
            "evaluation.json",
            "label_graph.safetensors",
            "model.safetensors",
        ],
    )
    card = (tmp_path / "uploaded" / "README.md").read_text()
    assert "library_name: trcgl" in card and all(f"| {c} |" in card for c in local.classes)
    # the card carries what evaluate measured, with its intervals, and the training digests
    metrics = json.loads((run / "evaluation" / "val" / "metrics.json").read_text())
    overall, ci = metrics["summary"]["overall"], metrics["intervals"]["overall"]["mAP"]
    assert "## Metrics on the val split" in card
    assert f"| overall | {overall['n_classes']} | {overall['mAP']:.4f} [{ci[0]:.3f}, " in card
    provenance = json.loads((run / "model" / "config.json").read_text())["provenance"]
    assert provenance["data_digest"][:16] in card and provenance["config_digest"][:16] in card
    _hub_entry(tmp_path / "hub", "org/trcgl-demo", tmp_path / "uploaded")
    hub = trcgl.load("org/trcgl-demo", device="cpu")
    images = sorted((nih_sample / "images").iterdir())[:3]
    pd.testing.assert_frame_equal(
        hub.predict(images, binary=True), local.predict(images, binary=True)
    )


def test_predict_calibrated_applies_the_folders_temperature(evaluated, nih_sample, tmp_path):
    """--calibrated: σ(logit p / T) with the T of decisions.json; the 0/1 decisions stay."""
    import trcgl

    run, _ = evaluated
    temperature = json.loads((run / "model" / "decisions.json").read_text())["temperature"]
    out, cal = tmp_path / "raw.csv", tmp_path / "cal.csv"
    images = str(nih_sample / "images" / "00000001_000.png")
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(images, folder)
    base = ["predict", "--model", str(run / "model"), str(folder), "--binary"]
    assert invoke(*base, "--out", str(out)).exit_code == 0
    assert invoke(*base, "--out", str(cal), "--calibrated").exit_code == 0
    raw, scaled = pd.read_csv(out), pd.read_csv(cal)
    classes = [c for c in raw.columns if c != "ImageID" and not c.startswith("pred:")]
    p = raw[classes].to_numpy()
    logit = np.log(p) - np.log1p(-p)
    np.testing.assert_allclose(scaled[classes], 1 / (1 + np.exp(-logit / temperature)), rtol=1e-6)
    pred = [f"pred:{c}" for c in classes]
    assert (scaled[pred].to_numpy() == raw[pred].to_numpy()).all()
    model = trcgl.load(run / "model", device="cpu")
    api = model.predict([folder / "00000001_000.png"], calibrated=True)
    np.testing.assert_allclose(api[classes], scaled[classes], rtol=1e-5)


def test_the_model_folder_says_what_it_was_trained_from(evaluated, trained_run):
    """config.json's provenance: the training config and its digest, the training data's
    digest (independent of where the images are; changed by one label), image counts."""
    import hashlib

    import yaml

    from trcgl.config import load_config
    from trcgl.data.manifest import Manifest

    run, _ = evaluated
    provenance = json.loads((run / "model" / "config.json").read_text())["provenance"]
    _, overrides = trained_run
    cfg = load_config("nih-demo", [*overrides, "diffusion.enabled=false"])
    assert provenance["config"] == json.loads(json.dumps(cfg.to_dict()))
    text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)
    assert provenance["config_digest"] == hashlib.sha256(text.encode()).hexdigest()
    manifest = Manifest.load(run / "manifest.parquet")
    used = manifest.subset(split="train").extended(manifest.subset(split="val").frame)
    assert provenance["data_digest"] == used.digest()
    frame = used.frame.copy()
    frame["image"] = "/elsewhere/" + frame["image"]
    assert Manifest(frame, manifest.classes).digest() == used.digest()
    c = manifest.classes[0]
    frame.loc[0, c] = 1 - frame.loc[0, c]
    assert Manifest(frame, manifest.classes).digest() != used.digest()
    images = provenance["images"]
    assert images["val"] == (manifest.frame["split"] == "val").sum()
    assert images["train_real"] == (manifest.frame["split"] == "train").sum()
    assert images["train_synthetic"] == 0
    evaluation = json.loads((run / "model" / "evaluation.json").read_text())
    metrics = json.loads((run / "evaluation" / "val" / "metrics.json").read_text())
    assert evaluation["val"]["summary"] == metrics["summary"]
    assert evaluation["val"]["optimistic_tuned_f1"] is True


def test_evaluate_reports_f1_at_the_authors_threshold(evaluated, tmp_path):
    """--f1-at 0.5,0.2: F1@0.2 beside F1@0.5 and tuned, in the log, metrics.json and tables.md;
    equal to scikit-learn on predictions.csv. The padchest / cxrlt2026 presets ask for it."""
    from sklearn.metrics import f1_score

    from trcgl.config import load_config

    run = tmp_path / "run"
    shutil.copytree(evaluated[0], run)
    result = invoke("evaluate", "--run-dir", str(run), "--f1-at", "0.5,0.2", "--bootstrap", "0")
    assert result.exit_code == 0, result.output
    assert "F1@0.2" in result.output and "F1@0.5" in result.output
    out = run / "evaluation" / "val"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["f1_thresholds"] == [0.2, 0.5]
    preds = pd.read_csv(out / "predictions.csv")
    classes = [c for c in preds.columns if c != "ImageID" and not c.startswith("label:")]
    per_class = pd.read_csv(out / "per_class.csv").set_index("class")
    scored = [c for c in classes if preds[f"label:{c}"].sum() > 0]
    want = [f1_score(preds[f"label:{c}"], preds[c] >= 0.2, zero_division=0) for c in scored]
    assert metrics["summary"]["overall"]["macro_F1@0.2"] == pytest.approx(np.mean(want))
    np.testing.assert_allclose(per_class.loc[scored, "f1@0.2"], want)
    assert "| F1@0.2 |" in (out / "tables.md").read_text()
    assert load_config("padchest").evaluate.f1_thresholds == [0.5, 0.2]
    cxrlt = load_config("cxrlt2026", ["data.labels_csv=/data/cxrlt/train.csv"])
    assert cxrlt.evaluate.f1_thresholds == [0.5, 0.2]
    bad = invoke("evaluate", "--run-dir", str(run), "--f1-at", "0.2,x")
    assert bad.exit_code == 2 and "comma-separated numbers" in bad.output
