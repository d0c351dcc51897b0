"""Eq. 3 training of the tiny generator on real NIH images (32 px, a few steps each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import Transformer2DModel
from torch.utils.data import DataLoader

import trcgl.diffusion.train as train_module
from tests.conftest import killed_after_checkpoint
from trcgl.config import DiffusionConfig
from trcgl.data.manifest import Manifest
from trcgl.data.readers import read_nih
from trcgl.diffusion.components import (
    LORA_TARGET_MODULES,
    Components,
    decode_latents,
    encode_latents,
    load_components,
    to_vae_input,
)
from trcgl.diffusion.conditioning import PromptConditioner
from trcgl.diffusion.prompts import prompts_for_manifest
from trcgl.diffusion.train import (
    PromptImageDataset,
    apply_trained,
    checkpoint_unet,
    diffusion_loss,
    train_generator,
)
from trcgl.diffusion.vae_train import fit_scaling_factor, train_vae
from trcgl.errors import ConfigError

SIZE = 32
M = 4


@pytest.fixture(scope="module")
def manifest(nih_sample: Path) -> Manifest:
    full = read_nih(nih_sample / "Data_Entry_sample.csv").manifest
    return Manifest(full.frame.head(16), full.classes)


def make(manifest: Manifest, nih_sample: Path, rows: int = 16, seed: int = 0, dtype=None):
    """Fresh tiny components (in ``dtype``), a conditioner (m = 4) and a dataset of real
    32 px images."""
    components = load_components(None, {"image_size": SIZE, "seed": seed}, torch_dtype=dtype)
    sub = Manifest(manifest.frame.head(rows), manifest.classes)
    prompts = prompts_for_manifest(sub, "nih", tokenizer=components.tokenizer)
    dataset = PromptImageDataset(sub, nih_sample / "images", SIZE, prompts, in_memory=True)
    torch.manual_seed(seed)
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=M)
    return components, conditioner, dataset


def config(**kwargs) -> DiffusionConfig:
    base = {
        "steps": 3,
        "batch_size": 4,
        "num_context": M,
        "lr_context": 1e-2,
        "lr_unet": 1e-3,
        "checkpoint_every": 100,
        "eval_size": 4,
        "image_size": SIZE,
    }
    return DiffusionConfig(**{**base, **kwargs})


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_components_shapes_and_grayscale_round_trip():
    c = load_components(None, {"image_size": SIZE})
    assert isinstance(c, Components)
    assert (c.vae_scale_factor, c.latent_channels, c.image_size) == (8, 4, SIZE)
    assert c.vae.config.in_channels == 3
    assert c.unet.config.cross_attention_dim == c.text_encoder.config.hidden_size == 64
    assert not any(p.requires_grad for p in c.vae.parameters())
    assert not any(p.requires_grad for p in c.text_encoder.parameters())
    gray = torch.rand(2, 1, SIZE, SIZE) * 2 - 1
    assert torch.equal(to_vae_input(gray, 3)[:, 2], gray[:, 0])
    with torch.no_grad():
        z = encode_latents(c.vae, gray, generator=torch.Generator().manual_seed(0))
        assert z.shape == (2, 4, SIZE // 8, SIZE // 8)
        out = decode_latents(c.vae, z)
    assert out.shape == (2, 1, SIZE, SIZE) and out.min() >= -1 and out.max() <= 1
    # The UNet takes the m + L tokens of Eq. 2 as well as SD's plain 77.
    t = torch.tensor([10, 900])
    for length in (M + 77, 77):
        with torch.no_grad():
            eps = c.unet(z, t, encoder_hidden_states=torch.randn(2, length, 64)).sample
        assert eps.shape == z.shape


def test_load_components_errors(tmp_path):
    with pytest.raises(ConfigError, match="tiny configuration"):
        load_components(None)
    with pytest.raises(ConfigError, match="unknown tiny generator option"):
        load_components(None, {"image_sise": 64})
    with pytest.raises(ConfigError, match=r"hf download trcgl-test/no-such-generator"):
        load_components("trcgl-test/no-such-generator")
    (tmp_path / "unet").mkdir()
    with pytest.raises(ConfigError, match=r"lacks vae/, scheduler/, text_encoder/, tokenizer/"):
        load_components(tmp_path)


def test_dataset_items(manifest, nih_sample):
    _, _, dataset = make(manifest, nih_sample, rows=4)
    image, prompt = dataset[1]
    assert image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32
    assert -1.0 <= float(image.min()) < float(image.max()) <= 1.0
    assert prompt == "chest x-ray, PA view: cardiomegaly, emphysema"
    three = PromptImageDataset(
        Manifest(manifest.frame.head(4), manifest.classes),
        nih_sample / "images",
        SIZE,
        dataset.prompts,
        channels=3,
    )
    assert three[1][0].shape == (3, SIZE, SIZE) and torch.equal(three[1][0][0], image[0])
    with pytest.raises(ConfigError, match="3 prompts for 4 manifest rows"):
        PromptImageDataset(
            Manifest(manifest.frame.head(4), manifest.classes),
            nih_sample / "images",
            SIZE,
            ["a", "b", "c"],
        )


def test_eq3_gradients_reach_the_context_only_when_the_unet_is_frozen(manifest, nih_sample):
    components, conditioner, dataset = make(manifest, nih_sample, rows=4)
    images = torch.stack([dataset[i][0] for i in range(4)])
    latents = encode_latents(components.vae, images, sample=False)
    condition = conditioner.encode(dataset.prompts[:4])
    t = torch.tensor([1, 300, 600, 999])
    loss = diffusion_loss(components, latents, condition, t, torch.randn_like(latents))
    loss.backward()
    assert conditioner.context.grad is not None
    assert float(conditioner.context.grad.abs().sum()) > 0
    assert all(p.grad is None for p in components.unet.parameters())
    assert all(p.grad is None for p in components.text_encoder.parameters())


@pytest.mark.parametrize("mode", ["frozen", "lora", "full"])
def test_what_trains_and_what_stays_frozen(manifest, nih_sample, tmp_path, mode):
    components, conditioner, dataset = make(manifest, nih_sample, rows=8)
    text, vae, unet = (
        snapshot(m) for m in (components.text_encoder, components.vae, components.unet)
    )
    context = conditioner.context.detach().clone()
    summary = train_generator(
        components,
        conditioner,
        dataset,
        config(unet_mode=mode, cond_dropout=0.5),
        tmp_path,
        cpu=True,
    )
    assert summary["steps"] == 3 and np.isfinite(summary["loss_after"])
    assert not torch.equal(conditioner.context, context)  # C always trains
    assert same(snapshot(components.text_encoder), text)
    assert same(snapshot(components.vae), vae)
    after = snapshot(components.unet)
    if mode == "frozen":
        assert same(after, unet)
        assert summary["trainable_unet_parameters"] == 0
    elif mode == "lora":
        lora = {k: v for k, v in after.items() if ".lora_" in k}
        assert lora and all(any(t in k for t in LORA_TARGET_MODULES) for k in lora)
        base = {k.replace(".base_layer.", "."): v for k, v in after.items() if ".lora_" not in k}
        assert same(base, unet)  # the base weights did not move
        assert any(float(v.abs().sum()) > 0 for k, v in lora.items() if "lora_B" in k)
        assert (
            0 < summary["trainable_unet_parameters"] < 0.1 * sum(v.numel() for v in unet.values())
        )
    else:
        assert not torch.equal(after["conv_in.weight"], unet["conv_in.weight"])
    assert (tmp_path / "context.safetensors").is_file()
    rows = [json.loads(x) for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert json.loads((tmp_path / "train.json").read_text())["unet_mode"] == mode


def test_loss_decreases_on_a_fixed_batch(manifest, nih_sample, tmp_path):
    # 8 images, batch 8: every step sees the same images (fresh noise and timesteps). Measured
    # with seeds 0-3: evaluation loss 1.07-1.16 -> 0.39-0.44, first-5 mean 0.91-0.99 ->
    # last-5 0.58-0.65.
    components, conditioner, dataset = make(manifest, nih_sample, rows=8)
    cfg = config(steps=30, batch_size=8, unet_mode="full", lr_unet=2e-3, eval_size=8)
    summary = train_generator(components, conditioner, dataset, cfg, tmp_path, cpu=True)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert summary["loss_after"] < 0.8 * summary["loss_before"]


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_killed_and_resumed_run_ends_exactly_like_an_uninterrupted_one(
    manifest, nih_sample, tmp_path, monkeypatch, mode
):
    cfg = config(steps=6, checkpoint_every=2, unet_mode=mode, cond_dropout=0.5)
    # 12 images, batch 4: 3 steps an epoch, so the run crosses an epoch boundary.
    components, conditioner, dataset = make(manifest, nih_sample, rows=12)
    train_generator(components, conditioner, dataset, cfg, tmp_path / "full", cpu=True)
    reference = (conditioner.context.detach().clone(), snapshot(components.unet))

    components, conditioner, dataset = make(manifest, nih_sample, rows=12)
    with killed_after_checkpoint(monkeypatch, train_module, "save_generator_checkpoint", at=4):
        train_generator(components, conditioner, dataset, cfg, tmp_path / "killed", cpu=True)
    assert not (tmp_path / "killed" / "train.json").exists()

    components, conditioner, dataset = make(manifest, nih_sample, rows=12)  # a new process
    summary = train_generator(components, conditioner, dataset, cfg, tmp_path / "killed", cpu=True)
    assert summary["resumed_from"] == 4 and summary["steps"] == 6
    assert torch.equal(conditioner.context, reference[0])
    assert same(snapshot(components.unet), reference[1])

    def losses(run: str) -> list[tuple[int, float, int]]:
        text = (tmp_path / run / "loss.jsonl").read_text()
        return [(r["step"], r["loss"], r["dropped"]) for r in map(json.loads, text.splitlines())]

    assert losses("full") == losses("killed")
    assert sum(r[2] for r in losses("full")) > 0  # condition dropout did happen
    # The newest keep_checkpoints (2) are kept; the same base model, loaded afresh, takes the
    # trained weights (LoRA: the adapter on top of the base weights it was trained from).
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").glob("step-*")) == [
        "step-0000004",
        "step-0000006",
    ]
    fresh, fresh_conditioner, _ = make(manifest, nih_sample, rows=1)
    apply_trained(fresh, fresh_conditioner, tmp_path / "killed")
    assert torch.equal(fresh_conditioner.context, reference[0])
    assert same(snapshot(fresh.unet), reference[1])


def test_resume_refuses_another_configuration(manifest, nih_sample, tmp_path):
    components, conditioner, dataset = make(manifest, nih_sample, rows=4)
    train_generator(components, conditioner, dataset, config(steps=2), tmp_path, cpu=True)
    components, conditioner, dataset = make(manifest, nih_sample, rows=4)
    with pytest.raises(ConfigError, match=r"lr_unet: 0.001 → 0.01"):
        train_generator(
            components, conditioner, dataset, config(steps=4, lr_unet=1e-2), tmp_path, cpu=True
        )
    # More steps is fine: it continues.
    summary = train_generator(components, conditioner, dataset, config(steps=4), tmp_path, cpu=True)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4


def test_config_errors(manifest, nih_sample, tmp_path):
    components, conditioner, dataset = make(manifest, nih_sample, rows=4)
    with pytest.raises(ConfigError, match="unet_mode"):
        train_generator(
            components, conditioner, dataset, config(unet_mode="half"), tmp_path, cpu=True
        )
    with pytest.raises(ConfigError, match="num_context = 8"):
        train_generator(components, conditioner, dataset, config(num_context=8), tmp_path, cpu=True)
    with pytest.raises(ConfigError, match="config says 64"):
        train_generator(components, conditioner, dataset, config(image_size=64), tmp_path, cpu=True)


def test_train_vae_and_scaling_factor(manifest, nih_sample):
    components, _, dataset = make(manifest, nih_sample, rows=8)
    loader = DataLoader(dataset, batch_size=4, shuffle=False)
    before = snapshot(components.vae)
    losses = train_vae(components.vae, loader, steps=12, lr=2e-3, seed=0)
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert not same(snapshot(components.vae), before)
    assert not any(p.requires_grad for p in components.vae.parameters())
    factor = fit_scaling_factor(components.vae, loader)
    assert components.vae.config.scaling_factor == pytest.approx(factor) and factor > 0
    with torch.no_grad():
        z = encode_latents(components.vae, torch.stack([dataset[i][0] for i in range(8)]))
    assert 0.5 < float(z.std()) < 2.0


class _Scaled(Components):
    """Another "model family": the same networks, its denoiser's output scaled by 0.5, and
    every call counted (a stand-in for a generator whose denoiser is not a UNet)."""

    calls = 0

    def predict_noise(self, latents, timesteps, condition):
        type(self).calls += 1
        return 0.5 * super().predict_noise(latents, timesteps, condition)


def test_training_and_sampling_reach_the_denoiser_through_one_seam(manifest, nih_sample, tmp_path):
    from dataclasses import fields

    from trcgl.diffusion.sample import sample_images

    components, conditioner, dataset = make(manifest, nih_sample, rows=4)
    scaled = _Scaled(**{f.name: getattr(components, f.name) for f in fields(Components)})
    summary = train_generator(
        scaled, conditioner, dataset, config(steps=2, eval_size=2), tmp_path, cpu=True
    )
    assert _Scaled.calls == 2 + 2 * 4  # a call a step; the check batch: 4 timesteps, twice
    images = torch.stack([dataset[i][0] for i in range(2)])
    latents = scaled.encode(images, sample=False)
    t, noise = torch.tensor([10, 900]), torch.randn_like(latents)
    with torch.no_grad():
        eps = components.predict_noise(
            components.scheduler.add_noise(latents, noise, t), t, conditioner.encode(["a", "b"])
        )
        plain = F.mse_loss(0.5 * eps, noise)
        assert float(diffusion_loss(scaled, latents, conditioner.encode(["a", "b"]), t, noise)) == (
            pytest.approx(float(plain), rel=1e-6)
        )
    assert np.isfinite(summary["loss_after"])
    _Scaled.calls = 0
    sample_images(scaled, conditioner, ["a"], steps=3, guidance_scale=2.0, progress=False)
    assert _Scaled.calls == 3  # one (doubled-batch) call per denoising step


def test_accumulated_micro_batches_take_the_whole_batch_step(manifest, nih_sample, tmp_path):
    """batch 2 × 2 micro-batches and checkpointing = batch 4 in one go: the same context and
    UNet after 3 steps (LoRA), the same logged losses; keep_checkpoints=1 keeps one."""
    cfg = config(unet_mode="lora", cond_dropout=0.5, checkpoint_every=1, keep_checkpoints=1)
    components, conditioner, dataset = make(manifest, nih_sample, rows=12)
    train_generator(components, conditioner, dataset, cfg, tmp_path / "whole", cpu=True)
    whole = (conditioner.context.detach().clone(), snapshot(components.unet))
    cfg = config(
        unet_mode="lora",
        cond_dropout=0.5,
        checkpoint_every=1,
        keep_checkpoints=1,
        batch_size=2,
        grad_accumulation=2,
        gradient_checkpointing=True,
    )
    components, conditioner, dataset = make(manifest, nih_sample, rows=12)
    summary = train_generator(components, conditioner, dataset, cfg, tmp_path / "micro", cpu=True)
    assert summary["steps"] == 3
    assert not components.unet.is_gradient_checkpointing  # switched off again after training
    # Adam divides by √v + ε: float-order differences in gradients near 0 grow, in C to
    # ~1.4e-6 (measured on an AVX-512 CPU; the steps moved C by ~3e-2) and in LoRA A at
    # step 1, where B = 0, to ~3e-5 (the steps moved the weights by ~3e-3).
    assert torch.allclose(conditioner.context, whole[0], atol=1e-5, rtol=0)
    micro = snapshot(components.unet)
    assert max(float((micro[k] - whole[1][k]).abs().max()) for k in micro) < 1e-4

    def losses(run: str) -> list[float]:
        text = (tmp_path / run / "loss.jsonl").read_text()
        return [json.loads(line)["loss"] for line in text.splitlines()]

    assert losses("micro") == pytest.approx(losses("whole"), abs=1e-6)
    assert [p.name for p in (tmp_path / "micro" / "checkpoints").glob("step-*")] == ["step-0000003"]


def test_gradient_checkpointing_gives_the_same_gradients(manifest, nih_sample):
    """Checkpointing recomputes the UNet's activations, each transformer as a whole (its
    GroupNorm too, which diffusers' own checkpointing runs once): the gradients of Eq. 3 with
    respect to C and the UNet's weights equal the plain ones; switched off, nothing is
    recomputed."""
    results, norms = [], []
    for checkpointing in (False, True):
        components, conditioner, dataset = make(manifest, nih_sample, rows=4)
        unet = components.unet
        unet.requires_grad_(True).train()
        if checkpointing:
            checkpoint_unet(unet, True)
        transformers = [m for m in unet.modules() if isinstance(m, Transformer2DModel)]
        assert transformers
        calls = [0]
        for model in transformers:
            model.norm.register_forward_hook(lambda *_, c=calls: c.__setitem__(0, c[0] + 1))
        images = torch.stack([dataset[i][0] for i in range(4)])
        prompts = [dataset[i][1] for i in range(4)]
        g = torch.Generator().manual_seed(0)
        latents = components.encode(images, generator=g)
        t = torch.randint(0, 1000, (4,), generator=g)
        noise = torch.randn(latents.shape, generator=g)
        loss = diffusion_loss(components, latents, conditioner.encode(prompts), t, noise)
        loss.backward()
        norms.append(calls[0] / len(transformers))
        grads = {"context": conditioner.context.grad.clone()}
        grads.update({k: p.grad.clone() for k, p in unet.named_parameters() if p.grad is not None})
        results.append(grads)
        if checkpointing:
            checkpoint_unet(unet, False)
            assert not unet.is_gradient_checkpointing
            assert not any("forward" in vars(m) for m in transformers)
    assert norms == [1, 2]  # each transformer's GroupNorm recomputed in the backward pass
    plain, checkpointed = results
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for key in plain:
        assert torch.allclose(plain[key], checkpointed[key], atol=1e-6, rtol=1e-5), key


def test_the_vae_encodes_and_decodes_one_image_at_a_time(manifest, nih_sample):
    """Latents and decoded images of a batch equal diffusers' batched VAE calls (up to float
    summation order), with the encoder and decoder run once per image."""
    components, _, dataset = make(manifest, nih_sample, rows=4)
    vae = components.vae
    images = torch.stack([dataset[i][0] for i in range(4)])
    calls = {"encoder": 0, "decoder": 0}
    hooks = [
        getattr(vae, name).register_forward_hook(
            lambda *_, name=name: calls.__setitem__(name, calls[name] + 1)
        )
        for name in calls
    ]
    with torch.no_grad():
        latents = encode_latents(vae, images, sample=False)
        decoded = decode_latents(vae, latents)
    for hook in hooks:
        hook.remove()
    assert calls == {"encoder": 4, "decoder": 4}
    factor = float(vae.config.scaling_factor)
    with torch.no_grad():
        batched = vae.encode(to_vae_input(images, 3)).latent_dist.mean * factor
        pixels = vae.decode(latents / factor).sample.mean(dim=1, keepdim=True).clamp(-1, 1)
    assert torch.allclose(latents, batched, atol=1e-5, rtol=0)
    assert torch.allclose(decoded, pixels, atol=1e-5, rtol=0)


def _update_agreement(after: torch.Tensor, reference: torch.Tensor, start: torch.Tensor):
    """Cosine and relative distance between two runs' updates ``after − start``."""
    a, b = (after - start).detach().flatten(), (reference - start).detach().flatten()
    return float(F.cosine_similarity(a, b, dim=0)), float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", ["lora", "frozen"])
def test_mixed_precision_holds_the_frozen_weights_in_its_dtype(
    manifest, nih_sample, tmp_path, monkeypatch, mode
):
    """Under bf16 mixed precision the weights that do not train are held in bf16 (diffusers'
    LoRA recipe), the trainable ones (C, LoRA) in fp32; the run stays close to the same bf16
    run with fp32 frozen weights (autocast computes in bf16 either way). Measured: losses
    within 5e-4 (relative); the updates of C with cosine 0.997 (LoRA) / 0.998 (frozen), 7 %
    apart, as far as a bf16 autocast run's are from fp32 training's (0.997 / 0.999, 7 % / 5 %:
    Adam's first steps move weights with near-zero gradients by ± the learning rate); the
    LoRA B updates with cosine 0.990, 14 % apart."""
    cfg = config(unet_mode=mode, mixed_precision="bf16", lr_unet=1e-3, eval_size=2)
    runs = {}
    for held in ("bf16", "fp32"):
        if held == "fp32":
            monkeypatch.setattr(train_module, "frozen_dtype", lambda *a: None)
        components, conditioner, dataset = make(manifest, nih_sample, rows=8)
        start = conditioner.context.detach().clone()
        summary = train_generator(components, conditioner, dataset, cfg, tmp_path / held, cpu=True)
        text = (tmp_path / held / "loss.jsonl").read_text().splitlines()
        runs[held] = (components, conditioner, [json.loads(x)["loss"] for x in text], summary)
    components, conditioner, losses, summary = runs["bf16"]
    dtypes = {p.dtype for n, p in components.unet.named_parameters() if ".lora_" not in n}
    assert dtypes == {torch.bfloat16}
    lora = {n: p for n, p in components.unet.named_parameters() if ".lora_" in n}
    assert (len(lora) > 0) == (mode == "lora")
    assert all(p.dtype == torch.float32 for p in lora.values())
    assert conditioner.context.dtype == torch.float32
    assert {p.dtype for p in components.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in components.vae.parameters()} == {torch.bfloat16}
    reference_components, reference, reference_losses, reference_summary = runs["fp32"]
    assert losses == pytest.approx(reference_losses, rel=5e-3)
    assert summary["loss_after"] == pytest.approx(reference_summary["loss_after"], rel=5e-3)
    cosine, distance = _update_agreement(conditioner.context, reference.context, start)
    assert cosine > 0.98 and distance < 0.2
    if lora:
        after = dict(reference_components.unet.named_parameters())
        names = [n for n in lora if "lora_B" in n]  # B starts at 0: its update is itself
        ours, theirs = (torch.cat([w[n].flatten() for n in names]) for w in (lora, after))
        cosine, distance = _update_agreement(ours, theirs, torch.zeros_like(ours))
        assert cosine > 0.95 and distance < 0.3


def test_a_base_loaded_in_bf16_trains_its_lora_weights_in_fp32(manifest, nih_sample, tmp_path):
    """`trcgl diffusion train` loads the base in the frozen weights' dtype: PEFT then makes the
    adapter in bf16 too, and training holds it in fp32 (its start rounded to bf16)."""
    cfg = config(unet_mode="lora", mixed_precision="bf16", eval_size=2)
    losses = {}
    for loaded in (torch.bfloat16, torch.float32):
        components, conditioner, dataset = make(manifest, nih_sample, rows=8, dtype=loaded)
        train_generator(components, conditioner, dataset, cfg, tmp_path / str(loaded), cpu=True)
        lora = {p.dtype for n, p in components.unet.named_parameters() if ".lora_" in n}
        base = {p.dtype for n, p in components.unet.named_parameters() if ".lora_" not in n}
        assert lora == {torch.float32} and base == {torch.bfloat16}
        text = (tmp_path / str(loaded) / "loss.jsonl").read_text().splitlines()
        losses[loaded] = [json.loads(x)["loss"] for x in text]
    assert losses[torch.bfloat16] == pytest.approx(losses[torch.float32], rel=5e-3)


def test_which_weights_are_held_in_the_mixed_precision_dtype():
    from trcgl.diffusion.components import vae_dtype
    from trcgl.diffusion.train import frozen_dtype

    assert frozen_dtype("bf16", "lora") == frozen_dtype("bf16", "frozen") == torch.bfloat16
    assert frozen_dtype("fp16", "lora") == torch.float16
    assert frozen_dtype("no", "lora") is None  # fp32 training: as loaded
    assert frozen_dtype("bf16", "full") is None  # the whole generator is saved afterwards
    vae = load_components(None, {"image_size": SIZE}).vae
    vae.register_to_config(force_upcast=True)  # e.g. SD 1.5's VAE: fp16 decodes overflow
    assert vae_dtype(vae, torch.float16) == torch.float32
    assert vae_dtype(vae, torch.bfloat16) == torch.bfloat16
    vae.register_to_config(force_upcast=False)
    assert vae_dtype(vae, torch.float16) == torch.float16


def test_attention_runs_through_pytorch_sdpa():
    """diffusers' SDPA processor in the UNet and the VAE: PyTorch picks a flash or
    memory-efficient kernel, so attention memory grows linearly with the latent positions."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    components = load_components(None, {"image_size": SIZE})
    for model in (components.unet, components.vae):
        assert {type(p) for p in model.attn_processors.values()} == {AttnProcessor2_0}


def test_casting_the_generator_is_silent_and_leaves_what_is_cast(capfd):
    """diffusers' ``ModelMixin.to`` warns on every dtype cast, listing fp32 modules even when
    there are none; trcgl's casts (loading in a dtype, holding frozen weights, sampling) make
    the same cast without it, and leave a model already in the dtype as it is."""
    from trcgl.diffusion.components import cast_components

    components = load_components(None, {"image_size": SIZE})
    capfd.readouterr()
    cast_components(components, torch.bfloat16)
    models = (components.unet, components.text_encoder, components.vae)
    for model in models:
        assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    pointers = [p.data_ptr() for m in models for p in m.parameters()]
    cast_components(components, torch.bfloat16)  # nothing to do
    assert pointers == [p.data_ptr() for m in models for p in m.parameters()]
    load_components(None, {"image_size": SIZE}, torch_dtype=torch.float16)
    captured = capfd.readouterr()
    assert "float32" not in captured.err + captured.out
