"""Benchmark ONNX Runtime on an exported TRCGL-Net against PyTorch eager, on the CPU.

TRCGL-Net (``convnextv2_atto``, random weights, 30 classes) at 224 px, batch 16: exports it with
:func:`trcgl.models.export.export_model`, then times images/s of PyTorch eager (``no_grad``)
and of an ONNX Runtime CPU session on the same batches, alternating, and checks that the
probabilities agree. Writes ``benchmarks/results/export.json``.

    python benchmarks/bench_export.py [--repeats 5] [--size 224] [--batch 16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from results_file import save

from trcgl.labels.graph import LabelGraph
from trcgl.models.export import export_model
from trcgl.models.trcgl_net import TRCGLNet

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "export.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    classes = [f"c{i}" for i in range(30)]
    graph = LabelGraph.from_labels(rng.random((500, 30)) < 0.1, classes, 0.4)
    torch.manual_seed(0)
    model = TRCGLNet(
        classes=classes, backbone="convnextv2_atto", pretrained=None, graph=graph
    ).eval()
    model.preprocessing = {"image_size": args.size}
    images = torch.randn(args.batch, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = export_model(model, Path(tmp) / "model.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def eager() -> np.ndarray:
            with torch.no_grad():
                return torch.sigmoid(model(images)["logits"]).numpy()

        def onnx() -> np.ndarray:
            return session.run(None, {"images": images.numpy()})[0]

        difference = float(np.abs(eager() - onnx()).max())  # also the warm-up
        times: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
        for _ in range(args.repeats):
            for name, fn in (("pytorch", eager), ("onnxruntime", onnx)):
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
    rate = {k: args.batch / statistics.median(v) for k, v in times.items()}
    result = {
        "benchmark": "TRCGL-Net convnextv2_atto inference, ONNX Runtime CPU vs PyTorch eager",
        "image_size": args.size,
        "batch": args.batch,
        "repeats": args.repeats,
        "images_per_second": {k: round(v, 2) for k, v in rate.items()},
        "ratio_onnxruntime_over_pytorch": round(rate["onnxruntime"] / rate["pytorch"], 3),
        "max_abs_difference": difference,
    }
    save(
        result,
        args.out,
        torch=torch.__version__,
        torch_threads=str(torch.get_num_threads()),
        onnxruntime=ort.__version__,
    )


if __name__ == "__main__":
    main()
