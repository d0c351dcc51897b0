"""Localisation of the class maps: box masks, pointing game, mass inside, Grad-CAM against an
independent autograd implementation, and evaluate's scores on real NIH radiologist boxes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from trcgl.data.boxes import load_boxes
from trcgl.evaluation.localisation import (
    box_mask,
    class_maps,
    localisation_scores,
    mass_inside,
    pointing_hit,
)
from trcgl.models.baselines import CLIPClassifier, CSRAClassifier, TimmClassifier
from trcgl.models.trcgl_net import TRCGLNet

CLASSES = ["Atelectasis", "Effusion", "Infiltration"]


def test_box_mask_takes_the_pixels_whose_centre_is_inside():
    # 4×4 pixels, centres at 0.125, 0.375, 0.625, 0.875
    mask = box_mask(np.array([[0.0, 0.0, 0.5, 0.5]]), 4)
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    assert (mask == expected).all()
    # a union of two boxes, rectangular image (rows = height)
    mask = box_mask(np.array([[0.0, 0.0, 0.3, 1.0], [0.7, 0.7, 1.0, 1.0]]), (2, 4))
    assert mask.tolist() == [[True, False, False, False], [True, False, False, True]]


def test_pointing_and_mass_on_a_hand_worked_map():
    m = np.array([[0.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    inside = np.zeros((3, 3), bool)
    inside[1, 1:] = True  # the maximum (2.0) and the 1.0 to its right
    assert pointing_hit(m, inside)
    assert mass_inside(m, inside) == pytest.approx(3.0 / 4.0)
    assert not pointing_hit(m, ~inside)
    assert mass_inside(m, ~inside) == pytest.approx(1.0 / 4.0)
    # an all-zero map points nowhere and has no mass
    assert not pointing_hit(np.zeros((3, 3)), inside)
    assert mass_inside(np.zeros((3, 3)), inside) == 0.0


def test_scores_per_class_and_overall():
    pairs = pd.DataFrame(
        {
            "class": ["Atelectasis", "Atelectasis", "Effusion"],
            "hit": [True, False, True],
            "mass": [0.5, 0.1, 0.9],
            "chance": [0.1, 0.2, 0.3],
        }
    )
    table, overall = localisation_scores(pairs, CLASSES)
    assert table["class"].tolist() == ["Atelectasis", "Effusion"]  # no Infiltration boxes
    assert table["pointing"].tolist() == [0.5, 1.0]
    assert table["mass_inside"].tolist() == pytest.approx([0.3, 0.9])
    assert overall["macro_pointing"] == pytest.approx(0.75)
    assert overall["pooled_pointing"] == pytest.approx(2 / 3)
    assert overall["macro_chance"] == pytest.approx((0.15 + 0.3) / 2)
    assert overall["pairs"] == 3 and overall["classes"] == 2


def _reference_gradcam(features: torch.Tensor, logits: torch.Tensor, targets) -> torch.Tensor:
    """Grad-CAM written out (Selvaraju et al.): α_k = mean over positions of ∂s_c/∂A_k,
    map = ReLU(Σ_k α_k A_k)."""
    picked = logits[torch.arange(len(targets)), torch.as_tensor(targets)].sum()
    (grads,) = torch.autograd.grad(picked, features)
    alpha = grads.mean(dim=(2, 3), keepdim=True)
    return torch.relu((alpha * features).sum(dim=1))


def _upsampled(maps: torch.Tensor, size: int) -> np.ndarray:
    out = torch.nn.functional.interpolate(
        maps[:, None], size=(size, size), mode="bilinear", align_corners=False
    )
    return out[:, 0].double().numpy()


@pytest.mark.parametrize("backbone", ["resnet18", "convnextv2_atto"])
def test_gradcam_of_a_cnn_equals_the_formula(backbone):
    torch.manual_seed(0)
    model = TimmClassifier(classes=CLASSES, backbone=backbone).eval()
    x = torch.randn(3, 3, 64, 64)
    targets = [0, 2, 1]
    got = class_maps(model, x, targets, "gradcam")
    features = model.forward_features(x).detach().requires_grad_(True)
    want = _reference_gradcam(features, model.forward_head(features)["logits"], targets)
    assert got.shape == (3, 64, 64)
    np.testing.assert_allclose(got, _upsampled(want.detach(), 64), atol=1e-6)
    assert got.max() > 0


def test_gradcam_of_a_vit_reads_the_patch_tokens_entering_the_last_block():
    torch.manual_seed(0)
    model = TimmClassifier(classes=CLASSES, backbone="vit_tiny_patch16_224", img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    captured = {}

    def keep(module, args, out):
        out.retain_grad()
        captured["tokens"] = out

    hook = model.model.blocks[-1].norm1.register_forward_hook(keep)
    logits = model(x)["logits"]
    hook.remove()
    logits[[0, 1], [1, 2]].sum().backward()
    tokens = captured["tokens"]
    prefix = model.model.num_prefix_tokens
    acts = tokens[:, prefix:].detach().reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    grads = tokens.grad[:, prefix:].reshape(2, 4, 4, -1).permute(0, 3, 1, 2)
    want = torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(dim=1))
    got = class_maps(model, x, [1, 2], "gradcam")
    np.testing.assert_allclose(got, _upsampled(want, 64), atol=1e-6)
    # the hook is removed again: the model's own forward is unchanged
    np.testing.assert_allclose(model(x)["logits"].detach(), logits.detach(), atol=1e-6)


def test_gradcam_of_clip_and_attention_maps_of_the_attention_heads():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    clip = CLIPClassifier(classes=CLASSES, arch="ViT-B-32", image_size=64).eval()
    maps = class_maps(clip, x, [0, 1])  # auto: CLIP has no maps of its own → Grad-CAM
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all() and maps.max() > 0
    for model in (
        TRCGLNet(classes=CLASSES, backbone="convnextv2_atto", label_gcn=False),
        CSRAClassifier(classes=CLASSES, backbone="convnextv2_atto"),
    ):
        model.eval()
        assert model.has_attention_maps
        a = model(x, return_attention=True)["attention"].detach()
        got = class_maps(model, x, [2, 0])  # auto → the class attention a_c
        want = _upsampled(torch.stack([a[0, 2], a[1, 0]]), 64)
        np.testing.assert_allclose(got, want, atol=1e-7)
    assert not TimmClassifier(classes=CLASSES, backbone="resnet18").has_attention_maps


@pytest.fixture(scope="module")
def boxed_run(tmp_path_factory, nih_sample):
    """A run prepared from NIH's own Data_Entry layout over 90 real vendored images, 60 of them
    with radiologist boxes: prepare keeps the boxes from the torchxrayvision wheel's
    BBox_List_2017; then a tiny training."""
    from tests.conftest import TINY_TRAIN
    from trcgl.config import load_config
    from trcgl.data.readers import installed_label_csv
    from trcgl.stages.prepare import prepare
    from trcgl.stages.train import train

    root = tmp_path_factory.mktemp("boxed")
    entries = pd.read_csv(nih_sample / "Data_Entry_sample.csv")
    boxed = set(pd.read_csv(installed_label_csv("BBox_List_2017.csv.gz"))["Image Index"])
    has_box = entries["Image Index"].isin(boxed)
    pd.concat([entries[has_box].head(60), entries[~has_box].head(30)]).to_csv(
        root / "Data_Entry.csv", index=False
    )
    overrides = [
        f"data.labels_csv={root / 'Data_Entry.csv'}",
        f"data.image_root={nih_sample / 'images'}",
        *TINY_TRAIN,
        "images.size=64",
        "diffusion.enabled=false",
    ]
    run = root / "run"
    cfg = load_config("nih-demo", overrides)
    prepare(cfg, run, progress=False)
    train(cfg, run, progress=False)
    return run


def test_prepare_keeps_the_real_boxes_of_the_manifest_images(boxed_run):
    from trcgl.data.readers import installed_label_csv

    raw = pd.read_csv(installed_label_csv("BBox_List_2017.csv.gz"))
    manifest = pd.read_parquet(boxed_run / "manifest.parquet")
    boxes = load_boxes(boxed_run / "boxes.parquet")
    raw = raw[raw["Image Index"].isin(manifest["image_id"])]
    assert len(boxes) == len(raw) > 60
    info = json.loads((boxed_run / "label_stats.json").read_text())
    assert info["boxes"] == {"boxes": len(raw), "images": raw["Image Index"].nunique()}
    # coordinates: the file's pixels on the 1024 px PNGs, as fractions
    first = raw.iloc[0]
    row = boxes[
        (boxes["image_id"] == first["Image Index"])
        & np.isclose(boxes["x0"], float(first["Bbox [x"]) / 1024)
    ].iloc[0]
    assert row["y1"] == pytest.approx((float(first["y"]) + float(first["h]"])) / 1024)
    assert set(boxes["class"]) <= set(
        json.loads((boxed_run / "label_stats.json").read_text())["classes"]
    )
    assert "Infiltrate" not in set(boxes["class"])  # NIH's box name, mapped to Infiltration


def test_evaluate_scores_the_maps_against_the_boxes(boxed_run, tmp_path):
    """Per-class scores in metrics.json, localisation.csv and tables.md; recomputed here from
    the maps and the boxes; the report shows them."""
    from trcgl.evaluation.localisation import localise
    from trcgl.models.base import load_model
    from trcgl.run_dir import RunDir
    from trcgl.stages.evaluate import evaluate_run
    from trcgl.stages.report import write_report

    run = tmp_path / "run"
    shutil.copytree(boxed_run, run)
    ev = evaluate_run(run, bootstrap_resamples=0)
    loc = ev.localisation
    assert loc is not None and loc["method"] == "attention"
    out = run / "evaluation" / "val"
    assert json.loads((out / "metrics.json").read_text())["localisation"] == json.loads(
        json.dumps(loc)
    )
    manifest = pd.read_parquet(run / "manifest.parquet")
    rows = manifest[manifest["split"] == "val"]
    boxes = load_boxes(run / "boxes.parquet")
    scored = boxes[boxes["image_id"].isin(set(rows["image_id"]))]
    assert len(scored) > 0
    assert loc["overall"]["pairs"] == scored.groupby(["image_id", "class"]).ngroups
    table = pd.read_csv(out / "localisation.csv")
    assert table["images"].sum() == loc["overall"]["pairs"]
    assert "## Localisation (radiologist boxes)" in (out / "tables.md").read_text()
    # recomputed: the maps of the model's inputs against each pair's boxes
    model = load_model(run / "model")
    size = model.preprocessing["image_size"]
    mean, std = model.normalization
    ds = RunDir(run).training_data().dataset("val", train=False, mean=mean, std=std, size=size)
    pairs = localise(model, ds, rows["image_id"].tolist(), boxes)
    position = {i: n for n, i in enumerate(rows["image_id"])}
    for _, pair in pairs.iterrows():
        b = scored[(scored["image_id"] == pair["image_id"]) & (scored["class"] == pair["class"])]
        mask = box_mask(b[["x0", "y0", "x1", "y1"]].to_numpy(), size)
        image = ds[position[pair["image_id"]]]["image"][None]
        m = class_maps(model, image, [model.classes.index(pair["class"])])[0]
        assert pair["chance"] == pytest.approx(mask.mean())
        assert pair["hit"] == pointing_hit(m, mask)
        assert pair["mass"] == pytest.approx(mass_inside(m, mask))
    per_class = pairs.groupby("class")["hit"].mean()
    for r in loc["per_class"]:
        assert r["pointing"] == pytest.approx(per_class[r["class"]])
    report = write_report(run, explain_images=0).read_text()
    assert 'id="localisation"' in report
