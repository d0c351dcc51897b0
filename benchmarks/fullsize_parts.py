"""Random-weight generators of the real sizes, for the full-size benchmarks (no download).

:func:`sd15_folder` writes a diffusers folder with the architecture of Stable Diffusion 1.5
(UNet 859.5 M parameters, VAE 83.7 M with scaling factor 0.18215, CLIP ViT-L/14 text tower
123.1 M, PNDM scheduler): what RoentGen and the other chest X-ray fine-tunes are. ``tiny=True``
writes trcgl's tiny CPU generator instead (the ``--dry`` runs of the test suite). The weights
are random: these folders measure time and memory, not images.
"""

from __future__ import annotations

from pathlib import Path

import torch

#: Stable Diffusion 1.5's configurations (diffusers' ``runwayml/stable-diffusion-v1-5``).
SD15_UNET = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
}
SD15_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SD15_TEXT = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
SD15_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "steps_offset": 1,
}


def sd15_folder(folder: Path, *, tiny: bool = False, seed: int = 0) -> Path:
    """Write (once) a random-weight diffusers folder of SD 1.5's architecture, or the tiny
    generator's (``tiny=True``), to ``folder``; returns it."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from trcgl.diffusion.components import Components, load_components, save_components
    from trcgl.diffusion.text import load_tokenizer

    folder = Path(folder)
    if (folder / "model_index.json").is_file():
        return folder
    if tiny:
        return save_components(load_components(None, {"image_size": 32, "seed": seed}), folder)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components = Components(
            unet=UNet2DConditionModel(**SD15_UNET),
            vae=AutoencoderKL(**SD15_VAE),
            scheduler=PNDMScheduler(**SD15_SCHEDULER),
            text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT)),
            tokenizer=load_tokenizer(None),
            vae_scale_factor=8,
            latent_channels=4,
            source="random SD 1.5 architecture",
        )
    return save_components(components, folder)


def parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class RandomImages(torch.utils.data.Dataset):
    """``n`` random grayscale images in [-1, 1], one prompt each: what the generator's trainer
    reads, for measuring time and memory only."""

    def __init__(self, n: int, size: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, size, size, generator=g) * 2 - 1
        self.prompts = ["chest x-ray, PA view: pneumothorax, left apical"] * n

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.images[i], self.prompts[i]
