"""A LoRA / frozen generator folder references its base model instead of copying it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from trcgl.diffusion.components import LORA_FOLDER, add_lora, load_components, save_components
from trcgl.diffusion.conditioning import PromptConditioner
from trcgl.diffusion.generator_folder import (
    GENERATOR_FILE,
    fingerprint,
    load_generator_folder,
    save_generator_folder,
)
from trcgl.errors import DataError


def _trained(base: Path, mode: str):
    """The base model loaded, a LoRA adapter attached and moved off zero (as after training),
    and a conditioner whose C is not its initial value."""
    components = load_components(base)
    if mode == "lora":
        torch.manual_seed(0)
        add_lora(components.unet, 2)
        with torch.no_grad():
            for name, p in components.unet.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.1)
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=3)
    with torch.no_grad():
        conditioner.context.normal_()
    return components, conditioner


def _outputs(components, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 4, 4, generator=g)
    condition = torch.randn(1, 5, components.text_encoder.config.hidden_size, generator=g)
    with torch.no_grad():
        return components.predict_noise(x, 10, condition)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return save_components(load_components(None, {"image_size": 32}), tmp_path / "models" / "sd")


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("mode", ["lora", "frozen"])
def test_the_folder_holds_no_copy_of_the_base_and_reloads_exactly(base, tmp_path, mode):
    components, conditioner = _trained(base, mode)
    folder = save_generator_folder(
        components, conditioner, tmp_path / "run" / "generator", base=base, unet_mode=mode
    )
    record = json.loads((folder / GENERATOR_FILE).read_text())
    assert record["base"] == str(base.absolute()) and record["unet_mode"] == mode
    assert record["base_fingerprint"] == fingerprint(base)
    assert not (folder / "unet").exists() and not (folder / "vae").exists()
    assert (folder / LORA_FOLDER).is_dir() == (mode == "lora")
    assert _size(folder) < 0.2 * _size(base)
    loaded = load_generator_folder(folder)
    assert torch.equal(_outputs(loaded), _outputs(components))
    fresh = PromptConditioner(loaded.text_encoder, loaded.tokenizer, num_context=3)
    fresh.load_context(folder / "context.safetensors")
    assert torch.equal(fresh.context, conditioner.context)


def test_a_base_inside_the_run_is_referenced_relatively_and_survives_a_move(tmp_path):
    run = tmp_path / "run"
    base = save_components(load_components(None, {"image_size": 32}), run / "diffusion" / "base")
    components, conditioner = _trained(base, "lora")
    folder = save_generator_folder(
        components, conditioner, run / "diffusion" / "generator", base=base, unet_mode="lora"
    )
    assert json.loads((folder / GENERATOR_FILE).read_text())["base"] == "../base"
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(run, moved)
    loaded = load_generator_folder(moved / "diffusion" / "generator")
    assert torch.equal(_outputs(loaded), _outputs(components))


def test_a_missing_or_changed_base_is_a_clear_error(base, tmp_path):
    components, conditioner = _trained(base, "lora")
    folder = save_generator_folder(
        components, conditioner, tmp_path / "generator", base=base, unet_mode="lora"
    )
    moved = tmp_path / "moved-sd"
    shutil.move(base, moved)
    with pytest.raises(DataError, match=r"base model .* is not here.*diffusion.source"):
        load_generator_folder(folder)
    assert torch.equal(_outputs(load_generator_folder(folder, base=moved)), _outputs(components))
    other = save_components(load_components(None, {"image_size": 32, "seed": 1}), tmp_path / "o")
    with pytest.raises(DataError, match="not the one this generator was trained on"):
        load_generator_folder(folder, base=other)
    # One weight file changed in place (same names, shapes and size): the fingerprint sees it.
    weights = moved / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = bytes(10)
    weights.write_bytes(bytes(data))
    with pytest.raises(DataError, match="its files changed"):
        load_generator_folder(folder, base=moved)


def test_full_mode_writes_the_whole_generator(base, tmp_path):
    components, conditioner = _trained(base, "frozen")
    folder = save_generator_folder(
        components, conditioner, tmp_path / "generator", base=base, unet_mode="full"
    )
    assert (folder / "unet").is_dir() and json.loads((folder / GENERATOR_FILE).read_text())[
        "base"
    ] is None
    shutil.rmtree(base)  # self-contained
    assert torch.equal(_outputs(load_generator_folder(folder)), _outputs(components))
