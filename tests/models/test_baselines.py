"""Baselines of Table 1: timm with its own head, CSRA (Zhu & Wu, ICCV 2021), CLIP linear probe."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from trcgl.errors import ConfigError, DataError
from trcgl.models.backbone import create_backbone
from trcgl.models.base import WEIGHTS_FILE, Classifier, load_model, load_state
from trcgl.models.baselines import (
    CLIPClassifier,
    CSRAClassifier,
    CSRAHead,
    MultiHeadCSRA,
    TimmClassifier,
)

CLASSES = ["Atelectasis", "Effusion", "Nodule"]
TINY_CLIP = "trcgl-test-tiny-vit"


@pytest.fixture(scope="module", autouse=True)
def tiny_clip_config(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A 2-layer, width-64 open_clip ViT at 32 px (and a 1-layer text tower, dropped)."""
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 64,
            "patch_size": 8,
            "head_width": 32,
        },
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
    }
    path = tmp_path_factory.mktemp("open_clip") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and an empty Hugging Face cache (weights cached on this machine must not
    make a download "succeed")."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI = (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)

# Tiny configurations: name -> (builder, input size, expected normalisation)
BUILDERS: dict[str, tuple[Callable[..., Classifier], int, tuple]] = {
    "timm-resnet18": (lambda **kw: TimmClassifier(backbone="resnet18", **kw), 32, IMAGENET),
    "timm-convnextv2": (
        lambda **kw: TimmClassifier(backbone="convnextv2_atto", **kw),
        32,
        IMAGENET,
    ),
    "timm-vit": (  # vit_tiny's pretrained cfg: mean = std = 0.5
        lambda **kw: TimmClassifier(backbone="vit_tiny_patch16_224", img_size=32, **kw),
        32,
        HALF,
    ),
    "csra-resnet18": (
        lambda **kw: CSRAClassifier(backbone="resnet18", num_heads=4, **kw),
        64,
        IMAGENET,
    ),
    "csra-convnextv2": (  # ConvNeXt's head.norm is used by FeatureMap: saved once
        lambda **kw: CSRAClassifier(backbone="convnextv2_atto", **kw),
        64,
        IMAGENET,
    ),
    "clip": (lambda **kw: CLIPClassifier(arch=TINY_CLIP, **kw), 32, OPENAI),
}


def build(name: str, classes: list[str] = CLASSES) -> tuple[Classifier, torch.Tensor]:
    builder, size, _ = BUILDERS[name]
    torch.manual_seed(0)
    model = builder(classes=classes, pretrained=None)
    return model, torch.randn(2, 3, size, size)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_shape_partition_freeze_and_round_trip(name: str, tmp_path: Path) -> None:
    model, images = build(name)
    out = model(images)
    assert out["logits"].shape == (2, len(CLASSES))
    assert model.classes == tuple(CLASSES)
    mean, std = model.normalization
    assert (mean, std) == (pytest.approx(BUILDERS[name][2][0]), pytest.approx(BUILDERS[name][2][1]))
    if isinstance(model, CSRAClassifier):  # softmax maps of the first head, 64 px / 32 = 2
        att = model(images, return_attention=True)["attention"]
        assert att.shape == (2, len(CLASSES), 2, 2)
        assert torch.allclose(att.sum(dim=(2, 3)), torch.ones(2, len(CLASSES)), atol=1e-5)

    # backbone and head parameters partition all parameters
    everything = {id(p) for p in model.parameters()}
    backbone = [id(p) for p in model.backbone_parameters()]
    head = [id(p) for p in model.head_parameters()]
    assert backbone and head
    assert len(set(backbone)) == len(backbone) and len(set(head)) == len(head)
    assert not set(backbone) & set(head)
    assert set(backbone) | set(head) == everything

    # a frozen backbone gets no gradient, the head does
    model.freeze_backbone()
    model(images)["logits"].sum().backward()
    assert all(p.grad is None for p in model.backbone_parameters())
    assert all(p.grad is not None for p in model.head_parameters())
    model.freeze_backbone(False)
    assert all(p.requires_grad for p in model.parameters())

    # model folder round trip: same class, same logits, same normalisation
    model.eval()
    json.dumps(model.init_kwargs)  # JSON-serialisable
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is type(model)
    assert loaded.init_kwargs == model.init_kwargs
    assert loaded.normalization == model.normalization
    with torch.no_grad():
        assert torch.allclose(loaded(images)["logits"], model(images)["logits"], atol=0)


def test_other_architecture_or_class_count_does_not_load(tmp_path: Path) -> None:
    timm3, _ = build("timm-resnet18")
    timm3.save_pretrained(tmp_path / "timm3")
    weights = tmp_path / "timm3" / WEIGHTS_FILE
    timm4, _ = build("timm-resnet18", classes=[*CLASSES, "Mass"])
    with pytest.raises(DataError, match="class list"):
        load_state(timm4, weights)
    csra, _ = build("csra-resnet18")
    with pytest.raises(DataError, match="another architecture"):
        load_state(csra, weights)
    clip, _ = build("clip")
    with pytest.raises(DataError, match="missing"):
        load_state(clip, weights)


# -- timm -------------------------------------------------------------------------------------


def test_timm_vit_fixed_input_size() -> None:
    vit = TimmClassifier(classes=CLASSES, backbone="vit_tiny_patch16_224")
    with pytest.raises(DataError, match=r"built for 224×224 inputs, got 32×48"):
        vit(torch.randn(1, 3, 32, 48))
    assert vit(torch.randn(1, 3, 224, 224))["logits"].shape == (1, len(CLASSES))
    small = TimmClassifier(classes=CLASSES, backbone="vit_tiny_patch16_224", img_size=32)
    assert small(torch.randn(2, 3, 32, 32))["logits"].shape == (2, len(CLASSES))


def test_timm_local_weight_file(tmp_path: Path) -> None:
    trunk = create_backbone("resnet18", None)
    path = tmp_path / "resnet18.safetensors"
    save_file({f"backbone.{k}": v for k, v in trunk.state_dict().items()}, str(path))
    model = TimmClassifier(classes=CLASSES, backbone="resnet18", pretrained=str(path))
    assert torch.equal(model.model.conv1.weight, trunk.conv1.weight)


def test_timm_hub_offline_is_a_config_error(offline: None) -> None:
    with pytest.raises(ConfigError, match="could not get pretrained weights"):
        TimmClassifier(classes=CLASSES, backbone="resnet18", pretrained="hub")


# -- CSRA -------------------------------------------------------------------------------------


def test_csra_lambda_zero_is_mean_of_normalised_score_maps() -> None:
    torch.manual_seed(1)
    model = CSRAClassifier(classes=CLASSES, backbone="resnet18", lam=0.0).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        conv = model.head.heads[0].conv
        s = conv(model.features(images)) / conv.weight.flatten(1).norm(dim=1).view(1, -1, 1, 1)
        assert torch.allclose(model(images)["logits"], s.mean(dim=(2, 3)), atol=1e-6)
    # several heads: the sum of each head's mean
    x = torch.randn(2, 8, 3, 4)
    mha = MultiHeadCSRA(8, 5, num_heads=4, lam=0.0)
    means = [h.conv(x) / h.conv.weight.flatten(1).norm(dim=1).view(1, -1, 1, 1) for h in mha.heads]
    assert torch.allclose(mha(x), sum(m.mean(dim=(2, 3)) for m in means), atol=1e-6)


def test_csra_temperature_99_is_max_pooling() -> None:
    torch.manual_seed(2)
    x = torch.randn(2, 8, 3, 3)
    head = CSRAHead(8, 4, temperature=99, lam=0.3)
    base, att, s = head.logit_terms(x)
    assert torch.allclose(att, s.amax(dim=(2, 3)), atol=1e-3)
    assert torch.allclose(head(x), base + 0.3 * att)
    # softmax attention tends to max pooling as T grows
    big = CSRAHead(8, 4, temperature=1e4, lam=0.3)
    big.conv.weight.data.copy_(head.conv.weight.data)
    assert torch.allclose(big.logit_terms(x)[1], att, atol=1e-3)
    # the 2-head model uses T = 1 and T = 99 and sums the heads
    mha = MultiHeadCSRA(8, 4, num_heads=2, lam=0.3)
    assert [h.temperature for h in mha.heads] == [1, 99]
    assert torch.allclose(mha(x), mha.heads[0](x) + mha.heads[1](x))
    with pytest.raises(ConfigError, match="num_heads"):
        MultiHeadCSRA(8, 4, num_heads=3)


def test_csra_hand_checked_one_class_2x2() -> None:
    # 1 class, 1 channel, weight 2 (normalised away): S = x = log [[1, 2], [3, 4]], so the
    # T = 1 softmax weights are 0.1, 0.2, 0.3, 0.4.
    head = CSRAHead(1, 1, temperature=1, lam=0.5)
    head.conv.weight.data.fill_(2.0)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).log().view(1, 1, 2, 2)
    base, att, s = head.logit_terms(x)
    assert torch.allclose(s, x)
    assert base.item() == pytest.approx(math.log(24) / 4, abs=1e-6)
    assert att.item() == pytest.approx(math.log(2) + 0.3 * math.log(3), abs=1e-6)
    assert head(x).item() == pytest.approx(
        math.log(24) / 4 + 0.5 * (math.log(2) + 0.3 * math.log(3)), abs=1e-6
    )
    expected = torch.tensor([[0.1, 0.2], [0.3, 0.4]]).view(1, 1, 2, 2)
    assert torch.allclose(head.attention(s), expected, atol=1e-6)


# -- CLIP -------------------------------------------------------------------------------------


def test_clip_openai_offline_is_a_config_error(offline: None) -> None:
    with pytest.raises(ConfigError, match=r"could not get open_clip weights.*hf download"):
        CLIPClassifier(classes=CLASSES, pretrained="openai")


def test_clip_bad_arch_tag_or_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown open_clip architecture"):
        CLIPClassifier(classes=CLASSES, arch="no-such-clip")
    with pytest.raises(ConfigError, match="neither an open_clip tag"):
        CLIPClassifier(classes=CLASSES, arch=TINY_CLIP, pretrained="no-such-tag")
    pickle = tmp_path / "clip.pt"
    pickle.write_bytes(b"")
    with pytest.raises(ConfigError, match=r"\.safetensors files only"):
        CLIPClassifier(classes=CLASSES, arch=TINY_CLIP, pretrained=str(pickle))


def test_clip_local_weight_files(tmp_path: Path) -> None:
    torch.manual_seed(3)
    clip = open_clip.create_model(TINY_CLIP)
    full = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(full))
    tower = tmp_path / "visual.safetensors"
    save_file({k: v.contiguous() for k, v in clip.visual.state_dict().items()}, str(tower))
    for path in (full, tower):
        model = CLIPClassifier(classes=CLASSES, arch=TINY_CLIP, pretrained=str(path))
        for k, v in clip.visual.state_dict().items():
            assert torch.equal(model.visual.state_dict()[k], v), k
    other = tmp_path / "other.safetensors"
    save_file({"visual.proj": torch.zeros(3, 3)}, str(other))
    with pytest.raises(DataError, match="do not fit"):
        CLIPClassifier(classes=CLASSES, arch=TINY_CLIP, pretrained=str(other))


def test_clip_image_size_and_quick_gelu(tmp_path: Path) -> None:
    from open_clip.transformer import QuickGELU

    model = CLIPClassifier(classes=CLASSES, arch=TINY_CLIP, image_size=48, quick_gelu=True)
    assert model(torch.randn(1, 3, 48, 48))["logits"].shape == (1, 3)
    assert any(isinstance(m, QuickGELU) for m in model.modules())
    assert model.normalization == (open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    model.save_pretrained(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert any(isinstance(m, QuickGELU) for m in loaded.modules())
    assert loaded.init_kwargs["image_size"] == 48


@pytest.mark.parametrize("name", [*BUILDERS, "trcgl_net"])
def test_forward_is_the_head_on_the_features(name: str) -> None:
    """timm's split: ``forward_features`` gives the backbone's output (a feature map, a ViT's
    token sequence, or CLIP's pooled embedding), ``forward_head`` the logits from it; a timm
    baseline's logits equal timm's own forward of the same network."""
    from trcgl.models.trcgl_net import TRCGLNet

    if name == "trcgl_net":
        torch.manual_seed(0)
        model: Classifier = TRCGLNet(
            classes=CLASSES, backbone="convnextv2_atto", pretrained=None, label_gcn=False
        )
        images = torch.randn(2, 3, 64, 64)
    else:
        model, images = build(name)
    model.eval()
    with torch.no_grad():
        features = model.forward_features(images)
        logits = model(images)["logits"]
        assert torch.equal(model.forward_head(features)["logits"], logits)
        if isinstance(model, TimmClassifier):
            assert torch.equal(model.model(images), logits)
    expected_dim = 2 if isinstance(model, CLIPClassifier) else 3 if "vit" in name else 4
    assert features.dim() == expected_dim
    if name in ("trcgl_net", "csra-convnextv2"):  # 64 px / 32: a 2×2 map of 320 channels
        assert features.shape == (2, 320, 2, 2)
