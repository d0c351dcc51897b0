"""Eq. 4–6 sampling with the tiny generator (32 px, a few DDIM steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image
from torch.utils.data import DataLoader

from trcgl.config import DiffusionConfig
from trcgl.data.manifest import Manifest
from trcgl.data.readers import read_nih
from trcgl.diffusion.components import (
    LORA_FOLDER,
    decode_latents,
    load_components,
    save_components,
)
from trcgl.diffusion.conditioning import PromptConditioner
from trcgl.diffusion.prompts import prompts_for_manifest
from trcgl.diffusion.sample import (
    build_scheduler,
    classifier_free_guidance,
    ddim_step,
    predict_noise,
    sample_images,
    save_pngs,
    to_uint8,
)
from trcgl.diffusion.train import PromptImageDataset, train_generator
from trcgl.diffusion.vae_train import fit_scaling_factor, train_vae
from trcgl.errors import ConfigError

SIZE = 32
M = 4
PROMPTS = [
    "chest x-ray, PA view: pneumothorax, left apical",
    "chest x-ray, AP view: effusion, mass",
    "chest x-ray, PA view: no finding",
]


@pytest.fixture(scope="module")
def generator():
    """Tiny components (random init) and a conditioner with m = 4 context vectors."""
    components = load_components(None, {"image_size": SIZE})
    torch.manual_seed(0)
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=M)
    return components, conditioner


def sample(generator, prompts=PROMPTS, **kwargs):
    components, conditioner = generator
    options = {"steps": 4, "progress": False, "seed": 0}
    return sample_images(components, conditioner, prompts, **{**options, **kwargs})


def test_eq4_guidance_function():
    torch.manual_seed(0)
    u, c = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    torch.testing.assert_close(classifier_free_guidance(u, c, 1.0), c)
    torch.testing.assert_close(classifier_free_guidance(u, c, 0.0), u)
    torch.testing.assert_close(classifier_free_guidance(u, c, 3.0), u + 3.0 * (c - u))


def test_eq4_one_unet_call_on_the_doubled_batch(generator):
    components, conditioner = generator
    unet = components.unet
    torch.manual_seed(1)
    x, t = torch.randn(3, 4, 4, 4), torch.tensor(500)
    cond, uncond = conditioner.encode(PROMPTS), conditioner.encode_unconditional(3)
    calls = []
    handle = unet.register_forward_hook(lambda m, a, k: calls.append(a[0].shape[0]))
    try:
        with torch.no_grad():
            guided = predict_noise(components, x, t, cond, uncond, 3.0)
            at_one = predict_noise(components, x, t, cond, uncond, 1.0)
            eps_cond = unet(x, t, encoder_hidden_states=cond).sample
            eps_uncond = unet(x, t, encoder_hidden_states=uncond).sample
            only_cond = predict_noise(components, x, t, cond, None, 3.0)
    finally:
        handle.remove()
    assert calls[:2] == [6, 6]  # one call per prediction, on the doubled batch
    torch.testing.assert_close(at_one, eps_cond, rtol=1e-5, atol=1e-5)  # ω = 1: ε_cond
    torch.testing.assert_close(
        guided, eps_uncond + 3.0 * (eps_cond - eps_uncond), rtol=1e-5, atol=1e-5
    )
    assert torch.equal(only_cond, eps_cond)


def _cond_only_reference(generator, prompts, steps, seed):
    """DDIM on the conditional branch only, written out here."""
    components, conditioner = generator
    g = torch.Generator().manual_seed(seed)
    x = torch.cat([torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=g) for _ in prompts])
    scheduler = DDIMScheduler.from_config(components.scheduler.config)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        cond = conditioner.encode(prompts)
        x = x * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            eps = components.unet(x, t, encoder_hidden_states=cond).sample
            x = scheduler.step(eps, t, x).prev_sample
        return to_uint8(decode_latents(components.vae, x))


def test_guidance_one_equals_sampling_the_conditional_branch(generator):
    ours = sample(generator, guidance_scale=1.0, steps=5, seed=3)
    reference = _cond_only_reference(generator, PROMPTS, 5, 3)
    np.testing.assert_array_equal(np.stack(ours), reference)
    guided = sample(generator, guidance_scale=3.0, steps=5, seed=3)
    assert not np.array_equal(np.stack(guided), reference)


def test_ddim_step_is_eq5():
    scheduler = build_scheduler(load_components(None, {"image_size": SIZE}).scheduler)
    assert isinstance(scheduler, DDIMScheduler)
    # ᾱ_t by hand from the "scaled_linear" β schedule of the training scheduler.
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(
        scheduler.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-5, atol=1e-6
    )
    scheduler.set_timesteps(50)
    torch.manual_seed(0)
    x = torch.randn(2, 4, 4, 4)
    ac = scheduler.alphas_cumprod
    for t in scheduler.timesteps:
        eps = torch.randn_like(x)
        prev = int(t) - 1000 // 50
        a_prev = ac[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        x0 = (x - (1 - ac[t]).sqrt() * eps) / ac[t].sqrt()
        by_hand = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        ours = scheduler.step(eps, t, x, eta=0.0).prev_sample
        torch.testing.assert_close(ours, by_hand, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ddim_step(x, eps, ac[t], a_prev), by_hand)
        x = ours


def test_sampling_end_to_end_by_hand(generator):
    """Two DDIM steps with ω = 3, Eq. 4 from two separate UNet calls and Eq. 5 by hand."""
    components, conditioner = generator
    ours = np.stack(sample(generator, guidance_scale=3.0, steps=2, seed=7))
    g = torch.Generator().manual_seed(7)
    x = torch.cat([torch.randn(1, 4, SIZE // 8, SIZE // 8, generator=g) for _ in PROMPTS])
    ac = components.scheduler.alphas_cumprod
    with torch.no_grad():
        cond, uncond = conditioner.encode(PROMPTS), conditioner.encode_unconditional(3)
        for t in (501, 1):  # DDIM "leading" spacing, steps_offset 1: 1000 // 2 apart
            e_c = components.unet(x, t, encoder_hidden_states=cond).sample
            e_u = components.unet(x, t, encoder_hidden_states=uncond).sample
            eps = e_u + 3.0 * (e_c - e_u)
            a_prev = ac[t - 500] if t - 500 >= 0 else torch.tensor(1.0)  # set_alpha_to_one
            x = ddim_step(x, eps, ac[t], a_prev)
        by_hand = to_uint8(decode_latents(components.vae, x))
    assert np.abs(ours.astype(int) - by_hand.astype(int)).max() <= 1


def test_seeded_batched_and_shaped(generator):
    a = sample(generator, seed=11, batch_size=2)
    assert len(a) == 3 and all(x.shape == (SIZE, SIZE) and x.dtype == np.uint8 for x in a)
    b = sample(generator, seed=11, batch_size=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = sample(generator, seed=12, batch_size=2)
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    # The initial noise of an image depends on the seed and its position, not the batching.
    d = sample(generator, seed=11, batch_size=3)
    assert max(np.abs(x.astype(int) - y.astype(int)).max() for x, y in zip(a, d, strict=True)) <= 1
    assert sample(generator, prompts=[]) == []


def test_other_schedulers_and_sizes(generator):
    for name in ("DPMSolverMultistepScheduler", "EulerDiscreteScheduler", "DDPMScheduler"):
        images = sample(generator, prompts=PROMPTS[:2], scheduler=name, steps=3)
        assert [x.shape for x in images] == [(SIZE, SIZE)] * 2
        again = sample(generator, prompts=PROMPTS[:2], scheduler=name, steps=3)
        assert all(np.array_equal(x, y) for x, y in zip(images, again, strict=True))
    assert sample(generator, prompts=PROMPTS[:1], image_size=64)[0].shape == (64, 64)
    with pytest.raises(ConfigError, match="unknown diffusers scheduler"):
        sample(generator, scheduler="NoSuchScheduler")
    with pytest.raises(ConfigError, match="not a multiple of 16"):
        sample(generator, image_size=40)


def test_save_pngs(generator, tmp_path):
    images = sample(generator, prompts=PROMPTS[:2])
    paths = save_pngs(images, tmp_path / "syn", ["a", "b.png"])
    assert [p.name for p in paths] == ["a.png", "b.png"]
    for path, image in zip(paths, images, strict=True):
        with Image.open(path) as img:
            assert img.mode == "L" and img.size == (SIZE, SIZE)
            np.testing.assert_array_equal(np.asarray(img), image)
    assert sorted(p.name for p in (tmp_path / "syn").iterdir()) == ["a.png", "b.png"]
    with pytest.raises(ConfigError, match="2 images but 1 names"):
        save_pngs(images, tmp_path, ["a"])
    with pytest.raises(ConfigError, match="repeat"):
        save_pngs(images, tmp_path, ["a", "a.png"])
    with pytest.raises(ConfigError, match="plain file name"):
        save_pngs(images, tmp_path, ["a", "../b"])


def test_trained_generator_reloads_and_samples_identically(nih_sample, tmp_path):
    components = load_components(None, {"image_size": SIZE, "seed": 1})
    full = read_nih(nih_sample / "Data_Entry_sample.csv").manifest
    manifest = Manifest(full.frame.head(8), full.classes)
    prompts = prompts_for_manifest(manifest, "nih", tokenizer=components.tokenizer)
    dataset = PromptImageDataset(manifest, nih_sample / "images", SIZE, prompts, in_memory=True)
    loader = DataLoader(dataset, batch_size=4)
    train_vae(components.vae, loader, steps=2)
    fit_scaling_factor(components.vae, loader)
    torch.manual_seed(0)
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=M)
    config = DiffusionConfig(
        steps=2,
        batch_size=4,
        num_context=M,
        unet_mode="lora",
        lora_rank=4,
        lr_unet=1e-2,
        image_size=SIZE,
    )
    train_generator(components, conditioner, dataset, config, tmp_path / "run", cpu=True)
    before = sample_images(components, conditioner, prompts[:3], steps=4, progress=False)

    save_components(components, tmp_path / "gen")
    conditioner.save_context(tmp_path / "gen" / "context.safetensors")
    assert (tmp_path / "gen" / LORA_FOLDER / "adapter_model.safetensors").is_file()
    assert all((tmp_path / "gen" / s).is_dir() for s in ("unet", "vae", "scheduler"))

    loaded = load_components(tmp_path / "gen")
    assert loaded.vae.config.scaling_factor == components.vae.config.scaling_factor
    reloaded = PromptConditioner(loaded.text_encoder, loaded.tokenizer, num_context=M)
    reloaded.load_context(tmp_path / "gen" / "context.safetensors")
    after = sample_images(loaded, reloaded, prompts[:3], steps=4, progress=False)
    assert all(np.array_equal(x, y) for x, y in zip(before, after, strict=True))

    # diffusers reads the folder as a Stable Diffusion pipeline too (LoRA folded in).
    from diffusers import StableDiffusionPipeline

    save_components(components, tmp_path / "merged", merge_lora=True)
    assert not (tmp_path / "merged" / LORA_FOLDER).exists()
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "merged")
    assert pipe.unet.config.cross_attention_dim == 64 and pipe.safety_checker is None


def test_saved_folder_is_replaced_atomically(generator, tmp_path):
    components, _ = generator
    folder = save_components(components, tmp_path / "gen")
    save_components(components, folder)  # overwriting works
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen"]
    assert isinstance(folder, Path) and (folder / "model_index.json").is_file()
