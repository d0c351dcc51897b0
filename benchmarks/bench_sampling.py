"""Benchmark: trcgl's sampler (Eq. 4–6) against diffusers' own ``StableDiffusionPipeline``.

Both run the same tiny generator (64 px, VAE ×8, UNet (32, 64), tiny CLIP text tower; random
init — speed does not depend on the weights), the same DDIM scheduler, steps (20), guidance
(ω = 3, classifier-free guidance on a doubled batch in both) and batch (8 prompts), on this
machine's device, in one process, alternating, ``--repeats`` times after a warm-up; medians.

* ``trcgl m=8``: :func:`trcgl.diffusion.sample.sample_images` with m = 8 learnable context
  vectors, i.e. the UNet cross-attends to m + 77 = 85 tokens (Eq. 2);
* ``trcgl m=0``: the same with m = 0 — 77 tokens, apples to apples with diffusers;
* ``diffusers``: ``StableDiffusionPipeline`` built from the same UNet, VAE, text encoder and
  tokenizer with a ``DDIMScheduler`` (``safety_checker=None``), plain text embeddings (77
  tokens), ``output_type="np"``.

Ratios are images/s of trcgl / images/s of diffusers (goal ≥ 1.0): the headline is the median
over repeats of the ratio of back-to-back runs (robust to this machine's slow spells); the
ratio of the median throughputs and of the fastest runs are reported too. As a correctness check,
trcgl with m = 0 and diffusers are also run from the same initial latents, diffusers' final
latents decoded the trcgl way (Eq. 6, channels averaged, 8-bit), and the images compared.

Results go to ``benchmarks/results/sampling.json``.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_sampling.py``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results" / "sampling.json"
PROMPTS = [
    "chest x-ray, PA view: pneumothorax, left apical",
    "chest x-ray, AP view: effusion, mass",
    "chest x-ray, PA view: cardiomegaly, emphysema",
    "chest x-ray, PA view: no finding",
    "chest x-ray, supine AP view: hydropneumothorax, support devices",
    "chest x-ray, PA view: nodule",
    "chest x-ray, AP view: atelectasis, effusion, infiltration",
    "chest x-ray, PA view: hernia",
]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: keep)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    from trcgl.diffusion.components import decode_latents, load_components
    from trcgl.diffusion.conditioning import PromptConditioner
    from trcgl.diffusion.sample import sample_images, to_uint8

    diffusers_logging.set_verbosity_error()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    components = load_components(None, {"image_size": args.size}).to(device)
    torch.manual_seed(0)
    conditioners = {
        "trcgl m=8": PromptConditioner(components.text_encoder, components.tokenizer, 8),
        "trcgl m=0": PromptConditioner(components.text_encoder, components.tokenizer, 0),
    }
    for conditioner in conditioners.values():
        conditioner.to(device)
    pipe = StableDiffusionPipeline(
        vae=components.vae,
        text_encoder=components.text_encoder,
        tokenizer=components.tokenizer,
        unet=components.unet,
        scheduler=DDIMScheduler.from_config(components.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    prompts = (PROMPTS * (args.batch // len(PROMPTS) + 1))[: args.batch]

    def ours(name: str) -> object:
        return sample_images(
            components,
            conditioners[name],
            prompts,
            guidance_scale=args.guidance,
            steps=args.steps,
            seed=0,
            batch_size=args.batch,
            progress=False,
        )

    def theirs(latents: torch.Tensor | None = None, output_type: str = "np") -> object:
        return pipe(
            prompt=prompts,
            height=args.size,
            width=args.size,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            generator=torch.Generator().manual_seed(0),
            latents=latents,
            output_type=output_type,
        ).images

    runs = {
        "trcgl m=8": lambda: ours("trcgl m=8"),
        "trcgl m=0": lambda: ours("trcgl m=0"),
        "diffusers": theirs,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with torch.no_grad():
        for fn in runs.values():  # warm-up
            fn()
        names = list(runs)
        for repeat in range(args.repeats):
            for i in range(len(names)):  # rotate the order: slow spells hit all alike
                name = names[(i + repeat) % len(names)]
                fn = runs[name]
                sync(device)
                t0 = time.perf_counter()
                fn()
                sync(device)
                times[name].append(time.perf_counter() - t0)

        # Same initial latents (trcgl draws them image by image from one CPU generator).
        g = torch.Generator().manual_seed(0)
        side = args.size // components.vae_scale_factor
        latents = torch.cat([torch.randn(1, 4, side, side, generator=g) for _ in prompts])
        a = np.stack(ours("trcgl m=0")).astype(int)
        denoised = theirs(latents.to(device), output_type="latent")
        b = to_uint8(decode_latents(components.vae, denoised)).astype(int)
    difference = np.abs(a - b)

    medians = {name: statistics.median(ts) for name, ts in times.items()}
    throughput = {name: args.batch / s for name, s in medians.items()}
    ours_names = ("trcgl m=8", "trcgl m=0")
    # Per repeat, the runs are back to back, so their ratio shares the machine's load of the
    # moment: the median of these paired ratios is the headline number (this machine has slow
    # spells); the ratios of the medians and of the fastest runs are given too.
    paired = {
        name: statistics.median(d / o for d, o in zip(times["diffusers"], times[name], strict=True))
        for name in ours_names
    }
    result = {
        "benchmark": "sampling",
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "machine": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "setup": {
            "image_size": args.size,
            "steps": args.steps,
            "guidance_scale": args.guidance,
            "batch": args.batch,
            "repeats": args.repeats,
            "scheduler": "DDIMScheduler (eta 0)",
            "models": "tiny random-init: VAE x8 (32,64,64,64), UNet (32,64), CLIP text 64x4",
        },
        "note": (
            "diffusers' pipeline conditions on the plain text embeddings (77 tokens); trcgl on "
            "m + 77 (Eq. 2): m = 8 is the default, m = 0 the apples-to-apples comparison"
        ),
        "median_seconds": medians,
        "images_per_second": throughput,
        "ratio_trcgl_over_diffusers": paired,
        "ratio_of_median_throughputs": {
            name: throughput[name] / throughput["diffusers"] for name in ours_names
        },
        "ratio_of_fastest_runs": {
            name: min(times["diffusers"]) / min(times[name]) for name in ours_names
        },
        "same_latents_m0_vs_diffusers_uint8": {
            "max_abs_difference": int(difference.max()),
            "mean_abs_difference": float(difference.mean()),
        },
        "all_seconds": times,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"sampling {args.batch} images, {args.size} px, DDIM {args.steps} steps, "
        f"CFG ω={args.guidance}, {result['device']}, {torch.get_num_threads()} threads"
    )
    for name in runs:
        print(f"  {name:10s} {medians[name]:.3f} s  {throughput[name]:7.2f} images/s")
    for name in ours_names:
        print(
            f"  throughput ratio {name} / diffusers: {paired[name]:.2f} (median of paired "
            f"repeats; goal >= 1.0), of medians "
            f"{result['ratio_of_median_throughputs'][name]:.2f}, of fastest runs "
            f"{result['ratio_of_fastest_runs'][name]:.2f}"
        )
    print(f"  note: {result['note']}")
    print(
        f"  same latents, trcgl m=0 vs diffusers: max |Δ| = {int(difference.max())} "
        f"(8-bit), mean {difference.mean():.3f}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
