"""Benchmark: can the DataLoader feed the model? Loader images/s vs training images/s at 224 px.

1. Caches ``--images`` real NIH images (``/work/shared/data/nih-cxr14-256``; synthetic 256 px
   images if absent) as 224 px 8-bit PNGs with :func:`trcgl.data.cache.build_image_cache`.
2. **Loader**: ``DataLoader(ManifestDataset(..., build_transform(224, train=True)),
   batch_size=16, num_workers=2, shuffle=True, worker_init_fn=worker_init_fn)`` over the cache;
   after ``--warmup`` batches, images/s over windows of ``--window`` batches; median.
3. **Training**: ``timm.create_model("convnextv2_atto", pretrained=False, num_classes=15)``,
   AdamW, weighted BCE, forward + backward + step on batches already in memory (taken from the
   loader), single process, default torch threads; images/s = 16 / median step time.
4. Reports both and the ratio loader / training (goal ≥ 2) in ``benchmarks/results/loader.json``.

The machine has 2 cores, so the two are measured **one after the other** (the loader's worker
processes are shut down before training starts), never at the same time: the numbers say what
each can do alone, not how they share the cores during a real epoch.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_loader.py``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from trcgl.data.cache import build_image_cache, cached_relpath
from trcgl.data.dataset import ManifestDataset
from trcgl.data.transforms import build_transform, worker_init_fn
from trcgl.files import atomic_write_text

NIH = Path("/work/shared/data/nih-cxr14-256")
RESULTS = Path(__file__).resolve().parent / "results"
NIH_CLASSES = [
    "No Finding", "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
    "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
    "Pleural_Thickening", "Hernia",
]  # fmt: skip
BATCH = 16
SIZE = 224


def make_manifest(n: int, tmp: Path) -> tuple[pd.DataFrame, Path, str]:
    """A manifest of ``n`` source images (real NIH if available) and their image root."""
    if (NIH / "labels.csv").is_file():
        labels = pd.read_csv(NIH / "labels.csv").head(n)
        frame = pd.DataFrame({"image": labels["image"], "patient_id": labels["patient_id"]})
        findings = labels["finding_labels"].fillna("No Finding").str.split("|")
        for c in NIH_CLASSES:
            frame[c] = findings.map(lambda fs, c=c: int(c in fs))
        return frame, NIH, "nih-cxr14-256"
    root = tmp / "synthetic"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        img = rng.normal(128, 40, size=(256, 256)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / f"s{i}.png")
        names.append(f"s{i}.png")
    frame = pd.DataFrame({"image": names, "patient_id": range(n)})
    for j, c in enumerate(NIH_CLASSES):
        frame[c] = (rng.random(n) < 0.1 + 0.02 * j).astype(int)
    return frame, root, "synthetic"


def bench_loader(ds: ManifestDataset, warmup: int, batches: int) -> tuple[list[float], list]:
    """Arrival time of each batch after ``warmup`` batches (relative to the last warm-up batch);
    also return a few batches for the training measurement."""
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=BATCH,
        shuffle=True,
        num_workers=2,
        drop_last=True,
        worker_init_fn=worker_init_fn,
        persistent_workers=True,
    )
    arrivals: list[float] = []
    kept = []
    origin = None
    seen = 0
    while len(arrivals) < batches:  # several epochs only when the manifest is small
        for batch in loader:
            now = time.perf_counter()
            seen += 1
            if len(kept) < 6:
                kept.append(batch)
            if seen == warmup:
                origin = now
            elif seen > warmup:
                arrivals.append(now - origin)
            if len(arrivals) >= batches:
                break
    del loader  # shut the workers down before the training measurement
    return arrivals, kept


def window_rates(arrivals: list[float], window: int) -> list[float]:
    """Images/s over consecutive windows of ``window`` batches.

    Two workers hand over batches in bursts (each prefetches two), so the time between two
    single batches swings between ~0 and two batch-times; a window of several batches evens
    that out, and the median over windows drops slow spells of the shared machine.
    """
    times = [0.0, *arrivals]
    return [
        BATCH * window / (times[i + window] - times[i])
        for i in range(0, len(times) - window, window)
    ]


def bench_training(batches: list, warmup: int, steps: int) -> list[float]:
    """Seconds per forward + backward + AdamW step of convnextv2_atto on in-memory batches."""
    import timm

    model = timm.create_model("convnextv2_atto", pretrained=False, num_classes=len(NIH_CLASSES))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none")
    times = []
    for step in range(warmup + steps):
        batch = batches[step % len(batches)]
        start = time.perf_counter()
        logits = model(batch["image"])
        loss = (loss_fn(logits, batch["labels"]).mean(dim=1) * batch["weight"]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        if step >= warmup:
            times.append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--window", type=int, default=5)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=RESULTS / "loader.json")
    args = parser.parse_args()
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory(prefix="trcgl-bench-loader-") as tmp:
        tmp_path = Path(tmp)
        frame, root, origin = make_manifest(args.images, tmp_path)
        cache = tmp_path / "cache224"
        t0 = time.perf_counter()
        build_image_cache(list(frame["image"]), root, cache, SIZE, workers=2, progress=False)
        cache_s = time.perf_counter() - t0
        frame = frame.assign(image=frame["image"].map(cached_relpath))
        ds = ManifestDataset(frame, NIH_CLASSES, cache, build_transform(SIZE, train=True))

        load_before = os.getloadavg()
        arrivals, kept = bench_loader(ds, args.warmup, args.batches)
        train_times = bench_training(kept, warmup=2, steps=args.train_steps)
        load_after = os.getloadavg()

    rates = window_rates(arrivals, args.window)
    loader_ips = statistics.median(rates)
    loader_mean_ips = BATCH * len(arrivals) / arrivals[-1]
    train_ips = BATCH / statistics.median(train_times)
    ratio = loader_ips / train_ips
    result = {
        "benchmark": "DataLoader (224 px, train augmentations) vs convnextv2_atto training",
        "measured": "one after the other, not concurrently (2-core machine)",
        "images": {"count": len(frame), "origin": origin, "cache_seconds": round(cache_s, 2)},
        "batch_size": BATCH,
        "size": SIZE,
        "loader": {
            "num_workers": 2,
            "images_per_s_median": round(loader_ips, 1),
            "images_per_s_overall": round(loader_mean_ips, 1),
            "images_per_s_windows": [round(r, 1) for r in rates],
            "window_batches": args.window,
            "batches_timed": len(arrivals),
            "warmup_batches": args.warmup,
        },
        "training": {
            "model": "convnextv2_atto (pretrained=False, num_classes=15)",
            "step": "forward + weighted BCE + backward + AdamW",
            "torch_threads": torch.get_num_threads(),
            "images_per_s_median": round(train_ips, 1),
            "steps_timed": len(train_times),
            "median_s_per_step": round(statistics.median(train_times), 4),
        },
        "ratio_loader_over_training": round(ratio, 2),
        "goal_ratio": 2.0,
        "meets_goal": bool(ratio >= 2.0),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "load_average_1min_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        },
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print("measured one after the other, not at the same time (2-core machine)")
    print(
        f"loader   (2 workers, train aug): {loader_ips:7.1f} images/s (median of "
        f"{len(rates)} windows of {args.window} batches; overall {loader_mean_ips:.1f})"
    )
    print(
        f"training (convnextv2_atto, {torch.get_num_threads()} threads): {train_ips:7.1f} "
        f"images/s (median of {len(train_times)} steps)"
    )
    print(f"ratio loader/training: {ratio:.1f}x (goal >= 2x)   -> {args.out}")
    print(f"1-min load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f}")


if __name__ == "__main__":
    main()
