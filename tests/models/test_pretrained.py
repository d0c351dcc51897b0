"""Pretrained backbone weights by every documented name: ``hub``, ``hf-hub:org/name``,
``org/name``, a local ``.safetensors`` file; from a local hub cache laid out as
huggingface_hub lays it out (no network), and errors that name the real cause."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from trcgl.errors import ConfigError
from trcgl.models.backbone import create_backbone, hub_tag

REPO = "timm/convnextv2_atto.fcmae_ft_in1k"


@pytest.mark.parametrize(
    ("pretrained", "tag"),
    [
        ("hub", "convnextv2_atto"),
        (f"hf-hub:{REPO}", f"hf-hub:{REPO}"),
        (REPO, f"hf-hub:{REPO}"),
        ("/weights/atto.safetensors", None),
        ("weights/atto.safetensors", None),
        ("./atto.safetensors", None),
    ],
)
def test_each_name_asks_timm_for_the_right_thing(pretrained, tag):
    assert hub_tag("convnextv2_atto", pretrained) == tag


@pytest.mark.parametrize("pretrained", [f"hf-hub:{REPO}", REPO])
def test_hub_names_reach_timm_with_their_prefix(pretrained, monkeypatch):
    asked: list[tuple[str, bool]] = []
    real = timm.create_model

    def record(name, pretrained=False, **kwargs):
        asked.append((name, pretrained))
        return real("convnextv2_atto", pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", record)
    create_backbone("convnextv2_atto", pretrained)
    assert asked == [(f"hf-hub:{REPO}", True)]  # timm needs "hf-hub:" to find a hub repo


def test_a_timm_repo_of_another_architecture_is_refused_before_any_download(monkeypatch):
    asked: list[str] = []
    monkeypatch.setattr(timm, "create_model", lambda name, **kw: asked.append(name))
    with pytest.raises(ConfigError, match=r"is a 'convnextv2_tiny' but model\.backbone is"):
        create_backbone("convnextv2_atto", "hf-hub:timm/convnextv2_tiny.fcmae_ft_in22k_in1k")
    assert asked == []


def _hub_cache(root: Path, repo: str, architecture: str, state: dict) -> None:
    """A hub cache entry as huggingface_hub writes it: refs/main → snapshots/<commit>/."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))
    config = {
        "architecture": architecture,
        "num_classes": 1000,
        "pretrained_cfg": {
            "input_size": [3, 224, 224],
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": 1000,
            "classifier": "head.fc",
        },
    }
    (snap / "config.json").write_text(json.dumps(config))


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_hub_weights_load_from_a_local_hub_cache_offline(hub_cache):
    torch.manual_seed(3)
    reference = timm.create_model("convnextv2_atto", pretrained=False)
    _hub_cache(hub_cache, REPO, "convnextv2_atto", reference.state_dict())
    for name in (f"hf-hub:{REPO}", REPO):
        model = create_backbone("convnextv2_atto", name)
        own = reference.state_dict()
        loaded = model.state_dict()
        assert set(loaded) <= set(own) and len(loaded) > 100
        assert all(torch.equal(loaded[k], own[k]) for k in loaded)


def test_offline_without_the_weights_says_so_and_how_to_get_them(hub_cache):
    with pytest.raises(ConfigError) as info:
        create_backbone("convnextv2_atto", REPO)
    message = str(info.value)
    assert "not in the local hub cache and downloads are off" in message
    assert f"hf download {REPO}" in message
    with pytest.raises(ConfigError, match=r"hf download timm/convnextv2_atto\.fcmae_ft_in1k"):
        create_backbone("convnextv2_atto", "hub")  # timm's default tag of the architecture


def test_hub_weights_of_the_wrong_shape_do_not_blame_the_network(hub_cache):
    torch.manual_seed(3)
    femto = timm.create_model("convnextv2_femto", pretrained=False).state_dict()
    _hub_cache(hub_cache, "me/xray-atto", "convnextv2_atto", femto)  # wrong tensors inside
    with pytest.raises(ConfigError) as info:
        create_backbone("convnextv2_atto", "hf-hub:me/xray-atto")
    message = str(info.value)
    assert "do not fit the architecture" in message and "network" not in message


def test_a_hub_repo_of_another_architecture_is_refused_after_reading_its_config(hub_cache):
    torch.manual_seed(3)
    femto = timm.create_model("convnextv2_femto", pretrained=False).state_dict()
    _hub_cache(hub_cache, "me/xray-femto", "convnextv2_femto", femto)
    with pytest.raises(ConfigError, match=r"holds a 'convnextv2_femto' but model\.backbone"):
        create_backbone("convnextv2_atto", "hf-hub:me/xray-femto")


def test_a_local_safetensors_file_by_relative_path(tmp_path, monkeypatch):
    torch.manual_seed(4)
    reference = timm.create_model("convnextv2_atto", pretrained=False, num_classes=0)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    save_file(
        {f"backbone.{k}": v.contiguous() for k, v in reference.state_dict().items()},
        "w/atto.safetensors",
    )
    model = create_backbone("convnextv2_atto", "w/atto.safetensors")
    own = reference.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in model.state_dict().items())
