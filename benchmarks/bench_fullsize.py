"""Full-size dry run: the real model sizes through trcgl's own trainers, on CPU or GPU.

    HF_HUB_OFFLINE=1 python benchmarks/bench_fullsize.py [--dry]

Builds a random-weight diffusers folder of Stable Diffusion 1.5's architecture
(:mod:`fullsize_parts`) and runs, each configuration in a fresh process (so that its peak
memory is its own):

* the generator's training (:func:`trcgl.diffusion.train.train_generator`, 512 px, batch 2,
  m = 8, LoRA rank 8) for 2 steps in LoRA, frozen and full mode, with and without
  ``gradient_checkpointing``;
* sampling (:func:`trcgl.diffusion.sample.sample_images`): 2 images, 2 DDIM steps, ω = 3;
* the classifier (TRCGL-Net on ``convnextv2_base``, drop path 0.2) for 2 AdamW steps at 224 and
  512 px, batch 2, with and without gradient checkpointing;

and writes seconds per step (the second step; the first warms up) and the peak resident
memory (CPU; from after the models are loaded, VmHWM reset, glibc's mmap threshold fixed, see
:data:`ENV`) or the peak allocated GPU memory per configuration to
``benchmarks/results/fullsize.json``, with the size of a LoRA run's generator folder against
its base model's. ``--dry``: the tiny generator, ``convnextv2_atto`` at 32 px, 1 image — the
test suite runs it so the script cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize_parts import RandomImages, parameters, sd15_folder
from results_file import save

RESULTS = Path(__file__).resolve().parent / "results" / "fullsize.json"
#: A fixed mmap threshold: glibc then returns every freed tensor's pages at once, so that
#: resident memory measures the tensors a configuration needs, not what the allocator's arenas
#: keep (with glibc's default, growing threshold, LoRA + checkpointing at 512 px showed 2 GB of
#: freed activations still resident after the forward pass).
ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}

GENERATOR = {
    "lora": {"unet_mode": "lora", "gradient_checkpointing": False},
    "lora + checkpointing": {"unet_mode": "lora", "gradient_checkpointing": True},
    "frozen": {"unet_mode": "frozen", "gradient_checkpointing": False},
    "frozen + checkpointing": {"unet_mode": "frozen", "gradient_checkpointing": True},
    "full + checkpointing": {"unet_mode": "full", "gradient_checkpointing": True},
}
CLASSIFIER = {
    f"classifier {size} px{' + checkpointing' if ckpt else ''}": {"size": size, "ckpt": ckpt}
    for size in (224, 512)
    for ckpt in (False, True)
}


def _reset_peak() -> None:
    """Start the peak anew (after loading the models): CUDA's counter, or on Linux the
    process's resident high-water mark (``/proc/self/clear_refs`` ← 5)."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak() -> dict[str, float]:
    """Peak GPU memory allocated, or the peak resident memory (VmHWM) since :func:`_reset_peak`
    (the process's whole-life peak where /proc is missing)."""
    if torch.cuda.is_available():
        return {"peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30}
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"peak_rss_gb": int(line.split()[1]) / 2**20}
    return {"peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def generator_run(base: Path, settings: dict, size: int, batch: int, work: Path) -> dict:
    from trcgl.config import DiffusionConfig
    from trcgl.diffusion.components import load_components
    from trcgl.diffusion.conditioning import PromptConditioner
    from trcgl.diffusion.generator_folder import save_generator_folder
    from trcgl.diffusion.train import train_generator

    components = load_components(base)
    loaded = _peak()
    _reset_peak()
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=8)
    config = DiffusionConfig(
        image_size=size,
        batch_size=batch,
        steps=2,
        checkpoint_every=1000,
        eval_size=1,
        eval_timesteps=1,
        lora_rank=8,
        mixed_precision="auto",
        **settings,
    )
    dataset = RandomImages(batch, size)
    summary = train_generator(components, conditioner, dataset, config, work / "train")
    rows = [json.loads(line) for line in (work / "train" / "loss.jsonl").read_text().splitlines()]
    result = {
        "seconds_per_step": rows[-1]["seconds"],
        "first_step_seconds": rows[0]["seconds"],
        "trainable_unet_parameters": summary["trainable_unet_parameters"],
        "after_load": loaded,
        **_peak(),
    }
    if settings["unet_mode"] != "full":
        folder = save_generator_folder(
            components,
            conditioner,
            work / "generator",
            base=base,
            unet_mode=settings["unet_mode"],
        )
        result["generator_folder_mb"] = _bytes(folder) / 2**20
        result["base_model_mb"] = _bytes(base) / 2**20
    return result


def sample_run(base: Path, size: int, batch: int) -> dict:
    from trcgl.diffusion.components import load_components
    from trcgl.diffusion.conditioning import PromptConditioner
    from trcgl.diffusion.sample import sample_images
    from trcgl.stages.diffusion import _cast_for_sampling, sample_precision

    components = load_components(base)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = sample_precision("auto", device)
    _cast_for_sampling(components, dtype)
    components.to(device)
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=8)
    conditioner.to(device)
    _reset_peak()
    started = time.perf_counter()
    images = sample_images(
        components,
        conditioner,
        ["chest x-ray, PA view: pneumothorax"] * batch,
        steps=2,
        batch_size=batch,
        image_size=size,
        progress=False,
    )
    seconds = time.perf_counter() - started
    return {
        "images": len(images),
        "seconds": seconds,
        "precision": str(dtype).removeprefix("torch."),
        **_peak(),
    }


def classifier_run(backbone: str, size: int, ckpt: bool, batch: int) -> dict:
    import numpy as np

    from trcgl.labels.graph import LabelGraph
    from trcgl.models.trcgl_net import TRCGLNet

    classes = [f"class{i}" for i in range(30)]
    y = np.random.default_rng(0).random((5000, len(classes))) < 0.1
    torch.manual_seed(0)
    model = TRCGLNet(
        classes=classes,
        backbone=backbone,
        pretrained=None,
        graph=LabelGraph.from_labels(y, classes),
        drop_path_rate=0.2,
    )
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    if ckpt:
        model.set_grad_checkpointing(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device)
    target = (torch.rand(batch, len(classes), device=device) < 0.1).float()
    _reset_peak()
    times = []
    for _ in range(2):
        started = time.perf_counter()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)["logits"], target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return {
        "seconds_per_step": times[-1],
        "parameters_m": parameters(model) / 1e6,
        **_peak(),
    }


def one(name: str, args: argparse.Namespace, base: Path) -> dict:
    size, batch = (32, 1) if args.dry else (512, 2)
    with tempfile.TemporaryDirectory() as work:
        if name in GENERATOR:
            return generator_run(base, GENERATOR[name], size, batch, Path(work))
        if name == "sampling":
            return sample_run(base, size, batch)
        spec = CLASSIFIER[name]
        backbone = "convnextv2_atto" if args.dry else "convnextv2_base"
        return classifier_run(backbone, 32 if args.dry else spec["size"], spec["ckpt"], batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny models (the test suite)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--base", type=Path, help="where to keep the random SD 1.5 folder")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: one configuration
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    args = parser.parse_args()
    default = Path(tempfile.gettempdir()) / ("trcgl-tiny-sd" if args.dry else "trcgl-random-sd15")
    base = sd15_folder(args.base or default, tiny=args.dry)
    if args.one:
        print("RESULT " + json.dumps(one(args.one, args, base)))
        return
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    results: dict[str, dict] = {}
    for name in [*GENERATOR, "sampling", *CLASSIFIER]:
        if args.only and name not in args.only:
            continue
        command = [sys.executable, __file__, "--one", name, "--base", str(base)]
        command += ["--dry"] if args.dry else []
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=ENV)
        lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
        if done.returncode or not lines:
            results[name] = {"error": (done.stderr or done.stdout)[-2000:]}
        else:
            results[name] = json.loads(lines[-1].removeprefix("RESULT "))
        results[name]["wall_seconds"] = round(time.perf_counter() - started, 1)
        print(name, json.dumps(results[name]), flush=True)
    key = "peak_gpu_gb" if torch.cuda.is_available() else "peak_rss_gb"
    ratios = {}
    for mode in ("lora", "frozen"):
        plain, saver = results.get(mode, {}), results.get(f"{mode} + checkpointing", {})
        if key in plain and key in saver:
            ratios[f"{mode}: checkpointing / plain peak memory"] = saver[key] / plain[key]
    result = {
        "dry": args.dry,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "image_size": 32 if args.dry else 512,
        "batch_size": 1 if args.dry else 2,
        "unet_parameters_m": parameters(unet) / 1e6,
        "configurations": results,
        "ratios": ratios,
    }
    save(result, args.out, torch=torch.__version__)


if __name__ == "__main__":
    main()
