"""One GPU check (≤ 8 minutes on one GPU): the numbers a GPU user plans with.

    HF_HUB_OFFLINE=1 python benchmarks/gpu_check.py          # on a machine with a CUDA GPU
    HF_HUB_OFFLINE=1 python benchmarks/gpu_check.py --dry    # tiny sizes on CPU (test suite)

1. Classifier training images/s, bf16 autocast, batch 64, 224 px: TRCGL-Net against the same
   backbone with timm's own head (:class:`~trcgl.models.baselines.TimmClassifier`), for
   ``convnextv2_tiny`` and ``convnextv2_base``; peak GPU memory each.
2. Generator LoRA training steps/s through :func:`trcgl.diffusion.train.train_generator` at
   512 px, batch 8, m = 8, rank 8, bf16, with and without ``gradient_checkpointing``, on a
   random-weight folder of Stable Diffusion 1.5's architecture (:mod:`fullsize_parts`).
3. Sampling images/s in fp16, 20 DDIM steps, ω = 3, batch 8: trcgl's
   :func:`~trcgl.diffusion.sample.sample_images` against diffusers' ``StableDiffusionPipeline``
   built from the same parts.

Writes ``benchmarks/results/gpu.json`` (``gpu_dry.json`` for ``--dry``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize_parts import RandomImages, sd15_folder
from results_file import save

RESULTS = Path(__file__).resolve().parent / "results"
CLASSES = [f"class{i}" for i in range(30)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


def classifier(kind: str, backbone: str, a: argparse.Namespace, device: torch.device) -> dict:
    from trcgl.labels.graph import LabelGraph
    from trcgl.models.baselines import TimmClassifier
    from trcgl.models.trcgl_net import TRCGLNet

    torch.manual_seed(0)
    if kind == "timm head":
        model = TimmClassifier(classes=CLASSES, backbone=backbone, pretrained=None)
    else:
        y = np.random.default_rng(0).random((5000, len(CLASSES))) < 0.1
        graph = LabelGraph.from_labels(y, CLASSES)
        model = TRCGLNet(classes=CLASSES, backbone=backbone, pretrained=None, graph=graph)
    memory = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = model.to(device, memory_format=memory).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(a.batch, 3, a.size, a.size, device=device).to(memory_format=memory)
    y = (torch.rand(a.batch, len(CLASSES), device=device) < 0.1).float()
    _reset(device)
    dtype = torch.bfloat16
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            _sync(device)
            started = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype):
            logits = model(x)["logits"]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {"images_per_s": a.steps * a.batch / seconds, "peak_gb": _peak_gb(device)}


def generator(base: Path, ckpt: bool, a: argparse.Namespace, device: torch.device) -> dict:
    import json

    from trcgl.config import DiffusionConfig
    from trcgl.diffusion.components import load_components
    from trcgl.diffusion.conditioning import PromptConditioner
    from trcgl.diffusion.train import train_generator

    components = load_components(base)
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=8)
    steps = a.gen_steps
    config = DiffusionConfig(
        image_size=a.gen_size,
        batch_size=a.gen_batch,
        steps=steps,
        checkpoint_every=10_000,
        eval_size=1,
        eval_timesteps=1,
        unet_mode="lora",
        lora_rank=8,
        mixed_precision="auto",
        gradient_checkpointing=ckpt,
    )
    _reset(device)
    with tempfile.TemporaryDirectory() as work:
        train_generator(
            components, conditioner, RandomImages(a.gen_batch * steps, a.gen_size), config, work
        )
        rows = Path(work, "loss.jsonl").read_text().splitlines()
        seconds = [json.loads(r)["seconds"] for r in rows][1:] or [json.loads(rows[0])["seconds"]]
    return {"steps_per_s": 1 / float(np.mean(seconds)), "peak_gb": _peak_gb(device)}


def sampling(base: Path, kind: str, a: argparse.Namespace, device: torch.device) -> dict:
    from trcgl.diffusion.components import cast_components, load_components
    from trcgl.diffusion.conditioning import PromptConditioner
    from trcgl.diffusion.sample import build_scheduler, sample_images

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    components = load_components(base)
    cast_components(components, dtype)
    components.to(device)
    prompts = ["chest x-ray, PA view: pleural effusion"] * a.sample_batch
    _reset(device)
    if kind == "trcgl":
        conditioner = PromptConditioner(
            components.text_encoder, components.tokenizer, num_context=8
        ).to(device)

        def run() -> None:
            sample_images(
                components,
                conditioner,
                prompts,
                steps=a.sample_steps,
                batch_size=a.sample_batch,
                image_size=a.gen_size,
                progress=False,
            )

    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(
            vae=components.vae,
            text_encoder=components.text_encoder,
            tokenizer=components.tokenizer,
            unet=components.unet,
            scheduler=build_scheduler(components.scheduler, "DDIMScheduler"),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.set_progress_bar_config(disable=True)

        def run() -> None:
            pipe(
                prompts,
                num_inference_steps=a.sample_steps,
                guidance_scale=3.0,
                height=a.gen_size,
                width=a.gen_size,
                output_type="np",
            )

    run()  # warm-up
    _sync(device)
    started = time.perf_counter()
    run()
    _sync(device)
    seconds = time.perf_counter() - started
    return {"images_per_s": a.sample_batch / seconds, "peak_gb": _peak_gb(device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--out", type=Path)
    a = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not a.dry else "cpu")
    if not a.dry and device.type != "cuda":
        parser.error("no CUDA GPU here: run with --dry for the CPU check of the script")
    sizes = {
        "batch": 64, "size": 224, "steps": 30, "warmup": 5,
        "gen_size": 512, "gen_batch": 8, "gen_steps": 6,
        "sample_batch": 8, "sample_steps": 20,
    }  # fmt: skip
    if a.dry:
        sizes = {
            "batch": 2, "size": 32, "steps": 1, "warmup": 1,
            "gen_size": 32, "gen_batch": 2, "gen_steps": 2,
            "sample_batch": 2, "sample_steps": 2,
        }  # fmt: skip
    for key, value in sizes.items():
        setattr(a, key, value)
    backbones = ["convnextv2_atto"] if a.dry else ["convnextv2_tiny", "convnextv2_base"]
    base = sd15_folder(
        Path(tempfile.gettempdir()) / ("trcgl-tiny-sd" if a.dry else "trcgl-random-sd15"),
        tiny=a.dry,
    )
    started = time.perf_counter()
    result: dict = {"dry": a.dry, "device": str(device), "sizes": sizes, "classifier": {}}
    if device.type == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    for backbone in backbones:
        rows = {k: classifier(k, backbone, a, device) for k in ("trcgl-net", "timm head")}
        rows["ratio"] = rows["trcgl-net"]["images_per_s"] / rows["timm head"]["images_per_s"]
        result["classifier"][backbone] = rows
        print(backbone, rows, flush=True)
    result["generator_lora"] = {
        "plain": generator(base, False, a, device),
        "gradient checkpointing": generator(base, True, a, device),
    }
    print("generator", result["generator_lora"], flush=True)
    result["sampling"] = {k: sampling(base, k, a, device) for k in ("trcgl", "diffusers")}
    speeds = {k: v["images_per_s"] for k, v in result["sampling"].items()}
    result["sampling"]["ratio"] = speeds["trcgl"] / speeds["diffusers"]
    print("sampling", result["sampling"], flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = a.out or RESULTS / ("gpu_dry.json" if a.dry else "gpu.json")
    save(result, out, torch=torch.__version__)


if __name__ == "__main__":
    main()
