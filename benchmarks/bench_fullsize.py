"""Full-size dry run: the real model sizes through trcgl's own trainers, on CPU or GPU.

    HF_HUB_OFFLINE=1 python benchmarks/bench_fullsize.py [--dry]

Builds a random-weight diffusers folder of Stable Diffusion 1.5's architecture
(:mod:`fullsize_parts`) and runs, each configuration in a fresh process (so that its peak
memory is its own):

* the generator's training (:func:`trcgl.diffusion.train.train_generator`, 512 px, batch 2,
  m = 8, LoRA rank 8) for 2 steps in LoRA, frozen and full mode, with and without
  ``gradient_checkpointing``; in LoRA mode also with checkpointing and the step's 2 images
  as 2 accumulated micro-batches of 1 (``grad_accumulation``: the same step), and under bf16
  mixed precision (which holds the frozen weights in bf16, :func:`trcgl.diffusion.train.
  hold_frozen`; on a GPU ``auto`` is bf16 already);
* sampling (:func:`trcgl.diffusion.sample.sample_images`): 2 images, 2 DDIM steps, ω = 3;
* the classifier (TRCGL-Net on ``convnextv2_base``, drop path 0.2) for 2 AdamW steps at 224 and
  512 px, batch 2, with and without gradient checkpointing;

and writes seconds per step (the second step; the first warms up) and the peak resident
memory (CPU; from after the models are loaded, VmHWM reset, glibc's mmap threshold fixed, see
:data:`ENV`; the loading's own peak beside it, ``after_load``: a base loaded in fp32 is
memory-mapped and only read as it is used, one converted to bf16 is read whole) or the peak
allocated GPU memory per configuration to
``benchmarks/results/fullsize.json``, with the size of a LoRA run's generator folder against
its base model's. ``--only NAME ...`` runs those configurations and keeps the others' earlier
results from ``--out`` (each configuration says when it was ``measured``). ``--dry``: the
tiny generator, ``convnextv2_atto`` at 32 px, 1 image — the test suite runs it so the script
cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
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
    "lora": {"unet_mode": "lora"},
    "lora + checkpointing": {"unet_mode": "lora", "gradient_checkpointing": True},
    "lora + checkpointing + accumulation": {
        "unet_mode": "lora",
        "gradient_checkpointing": True,
        "grad_accumulation": 2,
    },
    "lora + bf16": {"unet_mode": "lora", "mixed_precision": "bf16"},
    "lora + bf16 + checkpointing": {
        "unet_mode": "lora",
        "mixed_precision": "bf16",
        "gradient_checkpointing": True,
    },
    "frozen": {"unet_mode": "frozen"},
    "frozen + checkpointing": {"unet_mode": "frozen", "gradient_checkpointing": True},
    "full + checkpointing": {"unet_mode": "full", "gradient_checkpointing": True},
}
#: The peak-memory ratios reported: (with the savers, the plain path).
RATIOS = {
    "lora: checkpointing / plain peak memory": ("lora + checkpointing", "lora"),
    "lora: checkpointing + accumulation / plain peak memory": (
        "lora + checkpointing + accumulation",
        "lora",
    ),
    "lora: bf16 / plain peak memory": ("lora + bf16", "lora"),
    "lora: bf16 + checkpointing / plain peak memory": ("lora + bf16 + checkpointing", "lora"),
    "lora + bf16: checkpointing / bf16 peak memory": ("lora + bf16 + checkpointing", "lora + bf16"),
    "frozen: checkpointing / plain peak memory": ("frozen + checkpointing", "frozen"),
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
    from trcgl.diffusion.train import frozen_dtype, train_generator
    from trcgl.training.precision import resolve_mixed_precision

    accumulate = settings.get("grad_accumulation", 1)  # the step's batch in micro-batches
    config = DiffusionConfig(
        image_size=size,
        batch_size=max(1, batch // accumulate),
        steps=2,
        checkpoint_every=1000,
        eval_size=1,
        eval_timesteps=1,
        lora_rank=8,
        **{"mixed_precision": "auto", **settings},
    )
    # As `trcgl diffusion train` loads it: under mixed precision the frozen weights in its dtype.
    held = frozen_dtype(resolve_mixed_precision(config.mixed_precision), config.unet_mode)
    components = load_components(base, torch_dtype=held)
    loaded = _peak()
    _reset_peak()
    conditioner = PromptConditioner(components.text_encoder, components.tokenizer, num_context=8)
    dataset = RandomImages(config.batch_size * accumulate, size)
    summary = train_generator(components, conditioner, dataset, config, work / "train")
    rows = [json.loads(line) for line in (work / "train" / "loss.jsonl").read_text().splitlines()]
    result = {
        "seconds_per_step": rows[-1]["seconds"],
        "first_step_seconds": rows[0]["seconds"],
        "trainable_unet_parameters": summary["trainable_unet_parameters"],
        "mixed_precision": summary["mixed_precision"],
        "unet_weights": sorted({str(p.dtype) for p in components.unet.parameters()}),
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
    from trcgl.diffusion.components import cast_components, load_components
    from trcgl.diffusion.conditioning import PromptConditioner
    from trcgl.diffusion.sample import sample_images
    from trcgl.stages.diffusion import sample_precision

    components = load_components(base)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = sample_precision("auto", device)
    cast_components(components, dtype)
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
    earlier: dict[str, dict] = {}
    if args.only and args.out.is_file():
        kept = json.loads(args.out.read_text())
        earlier = {
            name: {"measured": kept.get("date"), **row}
            for name, row in kept.get("configurations", {}).items()
        }
    today = dt.datetime.now(dt.UTC).date().isoformat()
    results: dict[str, dict] = {}
    for name in [*GENERATOR, "sampling", *CLASSIFIER]:
        if args.only and name not in args.only:
            if name in earlier:
                results[name] = earlier[name]
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
        results[name]["measured"] = today
        print(name, json.dumps(results[name]), flush=True)
    key = "peak_gpu_gb" if torch.cuda.is_available() else "peak_rss_gb"
    ratios, whole = {}, {}
    for ratio, (saver, plain) in RATIOS.items():
        a, b = results.get(saver, {}), results.get(plain, {})
        if key in a and key in b:
            ratios[ratio] = a[key] / b[key]
            # from the process's start: loading included
            top = [max(r[key], r.get("after_load", {}).get(key, 0.0)) for r in (a, b)]
            whole[ratio] = top[0] / top[1]
    result = {
        "dry": args.dry,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "image_size": 32 if args.dry else 512,
        "batch_size": 1 if args.dry else 2,
        "unet_parameters_m": parameters(unet) / 1e6,
        "configurations": results,
        "ratios": ratios,
        "ratios_whole_process": whole,
    }
    save(result, args.out, torch=torch.__version__)


if __name__ == "__main__":
    main()
