"""The authors' released code (docs/method.md §6), written again here from its formulas on
hand-sized inputs, against trcgl's switches with the same weights: outputs to 1e-6, gradients
to 1e-5, in train and eval mode."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from trcgl.labels.graph import LabelGraph
from trcgl.models.trcgl_net import TRCGLNet

CLASSES = ["a", "b", "c", "d"]
AUTHORS = {
    "reweight_scale": 0.05,
    "spatial_class_weights": False,
    "attention_bias": False,
    "label_score": "cosine",
    "gcn_dropout": 0.1,
    "embed_dim": 256,
    "hidden_dim": 32,
    "lam": 0.1,
    "alpha": 0.05,
}


@pytest.fixture(scope="module")
def graph() -> LabelGraph:
    y = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [0, 1, 1, 1], [0, 0, 1, 1]])
    return LabelGraph.from_labels(y, CLASSES, 0.02, formula="authors")


def authors_head(m: TRCGLNet, x: torch.Tensor, train: bool, seed: int | None) -> torch.Tensor:
    """docs/method.md §6, "Head" and "Label branch", with m's weights as plain tensors; the
    GCN dropout draws after ``torch.manual_seed(seed)`` (``None``: from the current state)."""
    d = x.shape[1]
    w1, w2 = m.reweight.fc1.weight, m.reweight.fc2.weight  # 1×1 convolutions, no biases
    u = x.mean(dim=(2, 3))
    g = torch.sigmoid(F.relu(u @ w1.t()) @ w2.t())
    x_r = x + 0.05 * x * g[:, :, None, None]
    w, b = m.classifier.weight, m.classifier.bias
    s_gap = x.mean(dim=(2, 3)) @ w.t() + b
    conv_m = m.spatial.score_maps.weight  # C×D, no bias
    flat = x_r.flatten(2)  # B×D×P
    a = torch.softmax(torch.einsum("cd,bdp->bcp", conv_m, flat), dim=-1)
    v = torch.einsum("bcp,bdp->bcd", a, flat)
    s_spatial = (v * w[None]).sum(-1) + b  # the GAP classifier's w, b
    s_img = s_gap + 0.1 * s_spatial
    adj = m.gcn.adjacency
    e0, w_0, w_1 = m.gcn.embeddings, m.gcn.w0.weight, m.gcn.w1.weight
    e1 = F.relu(adj @ (e0 @ w_0.t()))
    if seed is not None:
        torch.manual_seed(seed)
    e1 = F.dropout(e1, 0.1, training=train)
    e2 = adj @ (e1 @ w_1.t())  # C×D
    g_r = x_r.mean(dim=(2, 3))
    p = m.gcn.projection.weight  # D×D, no bias
    cos = F.normalize(g_r @ p.t(), dim=-1) @ F.normalize(e2, dim=-1).t()
    s_label = cos + m.gcn.bias
    assert d == w.shape[1]
    return s_img + 0.05 * s_label


@pytest.mark.parametrize("train", [False, True])
def test_the_authors_head_equals_trcgl_with_the_authors_switches(graph, train):
    torch.manual_seed(0)
    model = TRCGLNet(classes=CLASSES, backbone="convnextv2_atto", graph=graph, **AUTHORS)
    for p in model.parameters():  # away from the init, so that every term matters
        p.data.add_(0.05 * torch.randn_like(p))
    model.train(train)
    assert model.reweight.fc1.bias is None and model.spatial.score_maps.bias is None
    x = torch.randn(3, model.features.num_features, 4, 4, requires_grad=True)
    torch.manual_seed(7)
    ours = model.forward_head(x)["logits"]
    theirs = authors_head(model, x, train, seed=7)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)
    weights = torch.randn_like(ours)
    params = [p for p in model.head_parameters() if p.requires_grad]
    g_ours = torch.autograd.grad((ours * weights).sum(), [x, *params], allow_unused=True)
    g_theirs = torch.autograd.grad((theirs * weights).sum(), [x, *params], allow_unused=True)
    for a, b in zip(g_ours, g_theirs, strict=True):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_batchnorm_on_the_map_instead_of_the_head_layernorm(graph, train):
    """feature_norm=batchnorm: φ(I) = BatchNorm2d(forward_features(I)) with no LayerNorm, and
    the BatchNorm is a head parameter (it trains in warm-up, as in the authors' code)."""
    torch.manual_seed(0)
    model = TRCGLNet(
        classes=CLASSES, backbone="convnextv2_atto", graph=graph, feature_norm="batchnorm"
    )
    bn = model.feature_norm
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    model.train(train)
    images = torch.randn(4, 3, 64, 64)
    raw = model.features.body.forward_features(images)
    want = F.batch_norm(
        raw,
        bn.running_mean.clone(),
        bn.running_var.clone(),
        bn.weight,
        bn.bias,
        training=train,
        momentum=0.0,
        eps=bn.eps,
    )
    torch.testing.assert_close(model.forward_features(images), want, atol=1e-6, rtol=1e-6)
    head = {id(p) for p in model.head_parameters()}
    assert {id(bn.weight), id(bn.bias)} <= head
    assert isinstance(model.features.norm, torch.nn.Identity)


def authors_loss(logits, targets, weights, counts, beta=0.9999):
    """docs/method.md §6, "Loss", written out."""
    n = torch.clamp(torch.as_tensor(counts, dtype=torch.float64), min=1)
    e = (1 - beta) / (1 - beta**n)
    e = e / e.mean()
    w = e**0.5
    u = 1 / (e + 1e-6)
    m = 0.2 * (u - u.min()) / (u.max() - u.min() + 1e-6)
    z = logits.double() - targets.double() * m
    bce = -(targets * F.logsigmoid(z) + (1 - targets) * F.logsigmoid(-z))
    per_sample = (w * bce).sum(dim=1)
    return (weights.double() * per_sample).mean()


def test_the_authors_loss_is_cb_margin():
    from trcgl.models.losses import build_loss

    counts = np.array([5000, 800, 40, 0, 3])  # a head class, a tail class, one without images
    torch.manual_seed(0)
    logits = (3 * torch.randn(6, 5)).requires_grad_(True)
    targets = (torch.rand(6, 5) > 0.6).float()
    weights = torch.tensor([1.0, 1.0, 0.5, 0.5, 1.0, 0.0])  # synthetic images at 0.5
    loss = build_loss("cb_margin", counts, 6000)
    ours = loss(logits, targets, weights)
    theirs = authors_loss(logits, targets, weights, counts)
    torch.testing.assert_close(ours.double(), theirs, atol=1e-6, rtol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, logits, retain_graph=True)
    (g_theirs,) = torch.autograd.grad(theirs, logits)
    torch.testing.assert_close(g_ours.double(), g_theirs.double(), atol=1e-5, rtol=1e-5)
    # the head class gets the largest margin, the rarest the smallest (0)
    assert loss.margins.argmax() == 0 and float(loss.margins.min()) == 0.0


def test_the_authors_sampler_repeats_each_image_a_whole_number_of_times(padchest):
    """docs/method.md §6, "Sampler", on the real PadChest labels (30 classes): f_c over all
    positive labels, r_c = max(1, √(0.01 / f_c)), max over the image's classes, clipped to
    [1, 10], rounded; every epoch repeats image i exactly r_i times."""
    from trcgl.data.sampling import RepeatFactorSampler, authors_repeat_factors

    y = padchest.manifest.labels()
    n = y.sum(axis=0).astype(float)
    f = n / n.sum()
    r_c = [max(1.0, (0.01 / f_c) ** 0.5) if f_c > 0 else 1.0 for f_c in f]
    want = []
    for row in y:
        r = max([r_c[c] for c in np.flatnonzero(row)], default=1.0)
        want.append(round(min(max(r, 1.0), 10.0)))
    got = authors_repeat_factors(y)
    assert got.tolist() == want
    assert sorted(set(got.tolist())) == [1, 2, 3, 5, 6]  # PadChest's rarest classes: 6
    one_in_many = np.zeros((100_000, 2), dtype=np.uint8)
    one_in_many[:, 0], one_in_many[0, 1] = 1, 1  # r = √(0.01 · 100,001) ≈ 31.6 → the cap
    assert authors_repeat_factors(one_in_many)[0] == 10
    sampler = RepeatFactorSampler(got, seed=3, num_replicas=1, rank=0)
    for epoch in (0, 1):
        counts = np.bincount(sampler.epoch_indices(epoch), minlength=len(y))
        assert counts.tolist() == want


def test_the_authors_preset_trains_end_to_end_on_real_nih_images(prepared, tmp_path):
    """-c nih-demo -c authors: prepare with the authors' graph, build their model and loss,
    train (tiny), evaluate with F1@0.2 and empty classes counted."""
    from tests.conftest import TINY_TRAIN
    from trcgl.config import load_config
    from trcgl.models.base import load_model
    from trcgl.models.losses import ClassBalancedMarginLoss
    from trcgl.stages.evaluate import evaluate_run
    from trcgl.stages.prepare import prepare
    from trcgl.stages.train import trainer_for_run

    _, overrides = prepared
    cfg = load_config(["nih-demo", "authors"], [*overrides, *TINY_TRAIN, "diffusion.enabled=false"])
    assert cfg.name == "nih-demo-authors" and cfg.graph.formula == "authors"
    run = tmp_path / "run"
    prepare(cfg, run, progress=False)
    graph = LabelGraph.load(run / "label_graph.safetensors")
    rows = pd.read_parquet(run / "manifest.parquet").query("split == 'train'")
    y = rows[list(graph.classes)].to_numpy()
    want = LabelGraph.from_labels(y, graph.classes, 0.02, "authors").adjacency
    np.testing.assert_allclose(graph.adjacency, want, atol=1e-6)
    trainer = trainer_for_run(cfg, run, progress=False)
    assert isinstance(trainer.loss_fn, ClassBalancedMarginLoss)
    assert set(np.unique(trainer.factors)) <= set(range(1, 11))
    result = trainer.fit()
    assert result["steps"] > 0
    model = load_model(run / "model")
    assert isinstance(model.feature_norm, torch.nn.BatchNorm2d)
    assert model.gcn.score == "cosine" and model.reweight.fc1.bias is None
    ev = evaluate_run(run, bootstrap_resamples=0)
    assert "macro_F1@0.2" in ev.report.summary["overall"]
    overall = ev.report.summary["overall"]
    assert overall["n_classes"] == len(model.classes)  # empty classes counted, as theirs


@pytest.mark.parametrize("train", [False, True])
def test_the_whole_authors_preset_forward_pass(graph, train):
    """The model `-c authors` builds (small backbone) against an independent composition of
    §6's formulas: forward_features of the timm body, BatchNorm2d, then the authors' head."""
    from trcgl.config import load_config
    from trcgl.models.build import build_model

    cfg = load_config(
        ["nih-demo", "authors"], ["model.backbone=convnextv2_atto", "model.pretrained=null"]
    )
    torch.manual_seed(0)
    model = build_model(cfg.model, CLASSES, graph)
    assert isinstance(model, TRCGLNet)
    bn = model.feature_norm
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    model.train(train)
    images = torch.randn(3, 3, 64, 64)
    stats = (bn.running_mean.clone(), bn.running_var.clone())
    torch.manual_seed(11)
    ours = model(images)["logits"]
    torch.manual_seed(11)  # the same draws: stochastic depth (drop_path 0.2), then GCN dropout
    raw = model.features.body.forward_features(images)
    x = F.batch_norm(raw, *stats, bn.weight, bn.bias, training=train, momentum=0.0, eps=bn.eps)
    theirs = authors_head(model, x, train, seed=None)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def test_table3_first_row_in_the_authors_reading_is_their_head_without_gate_and_labels(graph):
    """Table 3's ××× in the authors' reading (`trcgl experiment table3` on a `-c authors` run):
    the model keeps their spatial branch, s = s_gap + λ s_spatial with the GAP classifier's
    shared weights on the ungated map (§6 with the gate and the label branch removed), and
    trains on real images only; the equations' reading is the linear head alone."""
    from trcgl.config import load_config
    from trcgl.models.build import build_model
    from trcgl.stages.experiments import variant_config, variants_for

    cfg = load_config(
        ["nih-demo", "authors"], ["model.backbone=convnextv2_atto", "model.pretrained=null"]
    )
    variants = {v.name: v for v in variants_for("table3")}
    theirs_cfg, synthetic = variant_config(cfg, variants["××× (authors' reading)"], [])
    assert not synthetic and variants["××× (authors' reading)"].paper == "ConvNeXt + CSRA"
    torch.manual_seed(0)
    model = build_model(theirs_cfg.model, CLASSES, graph).eval()
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, model.features.num_features, 4, 4, requires_grad=True)
    ours = model.forward_head(x)["logits"]
    w, b = model.classifier.weight, model.classifier.bias
    flat = x.flatten(2)
    a = torch.softmax(torch.einsum("cd,bdp->bcp", model.spatial.score_maps.weight, flat), -1)
    s_spatial = (torch.einsum("bcp,bdp->bcd", a, flat) * w[None]).sum(-1) + b
    want = x.mean(dim=(2, 3)) @ w.t() + b + 0.1 * s_spatial
    torch.testing.assert_close(ours, want, atol=1e-6, rtol=1e-6)
    g_ours = torch.autograd.grad(ours.sum(), x)[0]
    g_want = torch.autograd.grad(want.sum(), x)[0]
    torch.testing.assert_close(g_ours, g_want, atol=1e-5, rtol=1e-5)

    plain_cfg, synthetic = variant_config(cfg, variants["backbone only"], [])
    plain = build_model(plain_cfg.model, CLASSES, graph).eval()
    assert not synthetic and variants["backbone only"].paper == "ConvNeXt"
    want = x.mean(dim=(2, 3)) @ plain.classifier.weight.t() + plain.classifier.bias
    torch.testing.assert_close(plain.forward_head(x)["logits"], want, atol=1e-6, rtol=1e-6)
