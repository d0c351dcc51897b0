"""TRCGL-Net against its equations (Eq. 7–25), model folders and backbone weights."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from trcgl.errors import ConfigError, DataError
from trcgl.labels.graph import LabelGraph
from trcgl.models.attention import ChannelReweighting, ClassSpatialAttention
from trcgl.models.backbone import create_backbone
from trcgl.models.base import load_model
from trcgl.models.trcgl_net import TRCGLNet

CLASSES = ["a", "b", "c", "d"]
SMALL = {"backbone": "convnextv2_atto", "embed_dim": 8, "hidden_dim": 16}


@pytest.fixture(scope="module")
def graph() -> LabelGraph:
    y = np.random.default_rng(0).integers(0, 2, (40, 4))
    return LabelGraph.from_labels(y, CLASSES, tau=0.02)


def _model(graph: LabelGraph, **kw) -> TRCGLNet:
    torch.manual_seed(0)
    return TRCGLNet(classes=CLASSES, graph=graph, **{**SMALL, **kw}).eval()


def test_eq10_channel_reweighting():
    torch.manual_seed(0)
    layer = ChannelReweighting(32, reduction=4, scale=0.05)
    x = torch.randn(2, 32, 3, 3)
    u = x.mean(dim=(2, 3))  # Eq. 8
    g = torch.sigmoid(layer.fc2(torch.relu(layer.fc1(u))))  # Eq. 9
    expected = x + 0.05 * x * g[:, :, None, None]  # Eq. 10
    torch.testing.assert_close(layer(x), expected)


def test_eq12_13_class_spatial_attention_by_hand():
    torch.manual_seed(0)
    layer = ClassSpatialAttention(6, 3)
    x = torch.randn(2, 6, 2, 3)
    s, a = layer(x)
    assert a.shape == (2, 3, 2, 3)
    torch.testing.assert_close(a.sum(dim=(2, 3)), torch.ones(2, 3))
    for b in range(2):
        for c in range(3):
            m = (layer.score_maps.weight[c][:, None, None] * x[b]).sum(0)
            m = m + layer.score_maps.bias[c]  # Eq. 12: M_c
            att = torch.softmax(m.flatten(), 0)
            v = (att[None, :] * x[b].flatten(1)).sum(1)  # Eq. 13: v_c
            torch.testing.assert_close(a[b, c].flatten(), att)
            torch.testing.assert_close(s[b, c], layer.weight[c] @ v + layer.bias[c])


def test_eq21_25_full_forward_composition(graph):
    model = _model(graph)
    x = torch.randn(2, 3, 64, 64)
    out = model(x, return_attention=True)
    feats = model.features(x)  # Eq. 7
    x_r = model.reweight(feats)  # Eq. 10
    s_gap = model.classifier(feats.mean(dim=(2, 3)))  # Eq. 11
    s_spatial, a = model.spatial(x_r)
    a_mat = torch.from_numpy(graph.adjacency).float()
    gcn = model.gcn
    e1 = torch.relu(a_mat @ gcn.embeddings @ gcn.w0.weight.t())  # Eq. 21
    e2 = a_mat @ e1 @ gcn.w1.weight.t()  # Eq. 22
    s_label = x_r.mean(dim=(2, 3)) @ e2.t() + gcn.bias  # Eq. 23–24
    expected = s_gap + 0.1 * s_spatial + 0.05 * s_label  # Eq. 14, 25
    torch.testing.assert_close(out["logits"], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["attention"], a)
    assert out["logits"].shape == (2, 4)


def test_ablation_switches(graph):
    plain = _model(graph, channel_attention=False, spatial_attention=False, label_gcn=False)
    x = torch.randn(2, 3, 64, 64)
    out = plain(x)
    expected = plain.classifier(plain.features(x).mean(dim=(2, 3)))
    torch.testing.assert_close(out["logits"], expected)
    assert set(out) == {"logits", "s_gap"}
    shared = _model(graph, spatial_class_weights=False, label_score="cosine", reweight_scale=0.05)
    assert not hasattr(shared.spatial, "weight")
    assert torch.isfinite(shared(x)["logits"]).all()


def test_parameter_groups_and_freezing(graph):
    model = _model(graph)
    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    assert backbone and head and not backbone & head
    assert backbone | head == {id(p) for p in model.parameters()}
    model.freeze_backbone(True)
    model.train()
    loss = model(torch.randn(2, 3, 64, 64))["logits"].sum()
    loss.backward()
    assert all(p.grad is None for p in model.backbone_parameters())
    assert model.gcn.embeddings.grad is not None and model.classifier.weight.grad is not None


def test_model_folder_round_trip(graph, tmp_path):
    model = _model(graph, label_score="cosine")
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {
        "config.json",
        "model.safetensors",
        "label_graph.safetensors",
    }
    again = load_model(tmp_path / "m")
    assert isinstance(again, TRCGLNet) and again.classes == tuple(CLASSES)
    x = torch.randn(3, 3, 64, 64)
    assert torch.equal(again(x)["logits"], model(x)["logits"])
    assert torch.equal(TRCGLNet.from_pretrained(tmp_path / "m")(x)["logits"], model(x)["logits"])


def test_graph_and_checkpoint_mismatches(graph, tmp_path):
    other = LabelGraph(graph.adjacency, graph.cooccurrence, ("a", "b", "d", "c"), 0.02)
    with pytest.raises(DataError, match="classes differ"):
        TRCGLNet(classes=CLASSES, graph=other, **SMALL)
    with pytest.raises(DataError, match="needs the label graph"):
        TRCGLNet(classes=CLASSES, graph=None, **SMALL)
    _model(graph).save_pretrained(tmp_path / "m")
    # a folder whose weights come from another architecture
    plain = _model(graph, spatial_attention=False)
    plain.save_pretrained(tmp_path / "p")
    (tmp_path / "m" / "model.safetensors").write_bytes(
        (tmp_path / "p" / "model.safetensors").read_bytes()
    )
    with pytest.raises(DataError, match="do not fit this architecture"):
        load_model(tmp_path / "m")


def test_backbone_weights_from_a_prefixed_safetensors_file(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("convnextv2_atto", pretrained=False, num_classes=30)
    state = {f"backbone.{k}": v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "cxrlt.safetensors"))
    loaded = create_backbone("convnextv2_atto", str(tmp_path / "cxrlt.safetensors"))
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, source.state_dict()[k]), k
    del state["backbone.stem.0.weight"]
    save_file(state, str(tmp_path / "partial.safetensors"))
    with pytest.raises(DataError, match="1 missing"):
        create_backbone("convnextv2_atto", str(tmp_path / "partial.safetensors"))
    torch.save(source.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ConfigError, match="safetensors files only"):
        create_backbone("convnextv2_atto", str(tmp_path / "w.pth"))
    with pytest.raises(ConfigError, match="not found"):
        create_backbone("convnextv2_atto", str(tmp_path / "nope.safetensors"))


def test_hub_weights_offline_give_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="could not get pretrained weights"):
        create_backbone("convnextv2_atto", "hub")
    with pytest.raises(ConfigError, match="unknown timm backbone"):
        create_backbone("convnextv2_gigantic")


@pytest.mark.parametrize("architecture", ["trcgl_net", "timm", "clip"])
def test_gradient_checkpointing_gives_the_same_gradients(graph, architecture):
    from trcgl.models.baselines import CLIPClassifier, TimmClassifier

    def build():
        torch.manual_seed(0)
        if architecture == "trcgl_net":
            return _model(graph)
        if architecture == "timm":
            return TimmClassifier(classes=CLASSES, backbone="convnextv2_atto")
        return CLIPClassifier(classes=CLASSES, arch="ViT-B-32", image_size=64)

    x = torch.randn(2, 3, 64, 64)
    grads = []
    for checkpointing in (False, True):
        model = build().train()
        if checkpointing:
            model.set_grad_checkpointing(True)
            assert any(getattr(m, "grad_checkpointing", False) is True for m in model.modules())
        model(x)["logits"].square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)
