"""``trcgl run``: every stage of the method in one run directory, in order.

prepare → diffusion train → sample → filter → classifier training (two stages) → evaluate →
report. A complete stage is skipped (:meth:`~trcgl.run_dir.RunDir.is_complete`: its record,
written last, exists and names the current records of its inputs);
a killed run started again resumes inside the stage it stopped in (the image cache, generator
training, sampling and classifier training all resume), so nothing finished is lost or redone.
With ``diffusion.enabled: false`` the three diffusion stages are skipped and the classifier
trains on real images only.

The split evaluated is ``test`` when the run has one, else ``val`` (then the tuned-threshold F1
is optimistic, and the report says so).

Under ``accelerate launch`` / ``torchrun`` every process runs the pipeline, and each stage
runs where it belongs: the stages that train or sample data-parallel run on every process
(diffusion train, diffusion sample, the filter's classifier, the classifier); what one
process does (prepare with its image cache, the filter's decisions and the synthetic rows, the
classifier's start-afresh check, evaluate, report) runs on the main process while the others
wait, and every stage ends at a barrier. Whether a stage is complete is decided by the main
process and sent to the others, so all of them run or skip the same stages. The run directory
must be one folder that every process (every node) sees. The waits are as long as
:data:`~trcgl.training.processes.WAIT` allows, since the main process alone may build a
large image cache.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trcgl.config import Config
from trcgl.files import atomic_write_text
from trcgl.run_dir import STAGE_RECORDS, RunDir
from trcgl.training.processes import processes

__all__ = [
    "PipelineResult",
    "evaluated_split",
    "prepare_classifier",
    "run_pipeline",
]


@dataclass
class PipelineResult:
    """What ran, what was skipped, and where the results are."""

    run_dir: Path
    split: str
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: The metrics' patient-level bootstrap intervals (``metrics.json``'s ``intervals``).
    intervals: dict[str, Any] = field(default_factory=dict)
    #: The class maps' scores against radiologist boxes (``metrics.json``'s ``localisation``).
    localisation: dict[str, Any] | None = None
    synthetic: dict[str, Any] = field(default_factory=dict)
    #: ``report.html`` (``None`` on the processes other than the main one, which wrote it).
    report: Path | None = None
    #: False on the other processes of a multi-process run: they report nothing.
    main: bool = True


def evaluated_split(run_dir: Path) -> str:
    """``test`` when the prepared run has test images, else ``val``."""
    info = RunDir(run_dir).label_stats()
    return "test" if info.get("images", {}).get("test", 0) > 0 else "val"


#: Which synthetic images (the filter record's id, or none) the run's classifier trains on.
CLASSIFIER_INPUT = "classifier_input.json"


def _classifier_input(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / CLASSIFIER_INPUT
    return json.loads(path.read_text()) if path.is_file() else None


def prepare_classifier(run_dir: Path, synthetic_id: str | None) -> bool:
    """True when the classifier finished on the current synthetic images. Otherwise make
    ``run_dir`` ready to train: a classifier started on other synthetic images (or before
    they were made again) is removed; one started on these resumes."""
    current = {"synthetic_record": synthetic_id}
    if _classifier_input(run_dir) == current:
        return RunDir(run_dir).is_complete("train")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoints", "model", "tensorboard", "evaluation"):
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for name in (STAGE_RECORDS["train"], "metrics.jsonl"):
        (run_dir / name).unlink(missing_ok=True)
    atomic_write_text(run_dir / CLASSIFIER_INPUT, json.dumps(current) + "\n")
    return False


def run_pipeline(
    cfg: Config,
    run_dir: str | Path,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> PipelineResult:
    """Run (or finish) every stage for ``cfg`` in ``run_dir``; ``log`` gets one line per stage
    (from the main process only, when there are several)."""
    from accelerate.utils import broadcast_object_list

    from trcgl.stages import diffusion
    from trcgl.stages.evaluate import evaluate_run
    from trcgl.stages.prepare import is_complete
    from trcgl.stages.prepare import prepare as run_prepare
    from trcgl.stages.report import write_report
    from trcgl.stages.train import train

    state = processes()
    main = state.is_main_process
    run_dir = Path(run_dir)
    if cfg.diffusion.enabled:
        diffusion.check_settings(cfg)  # before prepare: nothing is done for a typo
    result = PipelineResult(run_dir, "val", main=main)

    def agreed(decide: Callable[[], bool]) -> bool:
        """``decide()`` on the main process, its answer on every process."""
        answer = [decide() if main else None]
        if state.num_processes > 1:
            broadcast_object_list(answer)
        return bool(answer[0])

    def step(name: str, done: Callable[[], bool], action: Callable[[], Any], *, every: bool):
        """Run ``action`` unless ``done``: on every process (``every``) or on the main one."""
        if agreed(done):
            result.skipped.append(name)
            if main:
                log(f"{name}: complete, skipped")
            return None
        if main:
            log(f"{name} ...")
        started = time.time()
        out = action() if every or main else None
        state.wait_for_everyone()
        result.seconds[name] = round(time.time() - started, 1)
        result.ran.append(name)
        if main:
            log(f"{name}: done in {result.seconds[name]:.1f} s")
        return out

    step(
        "prepare",
        lambda: is_complete(run_dir, cfg),
        lambda: run_prepare(cfg, run_dir, progress=progress),
        every=False,
    )
    result.split = evaluated_split(run_dir)
    use_synthetic = cfg.diffusion.enabled
    if use_synthetic:
        for key, fn in diffusion.STAGES:
            step(
                f"diffusion {key}",
                lambda key=key: diffusion.stage_done(run_dir, key),
                lambda fn=fn: fn(cfg, run_dir, progress=progress),
                every=True,
            )
        result.synthetic = RunDir(run_dir).record("diffusion filter") or {}
    else:
        result.skipped += [f"diffusion {key}" for key, _ in diffusion.STAGES]
        if main:
            log("diffusion: disabled (diffusion.enabled=false), real images only")
    synthetic_id = result.synthetic.get("id")
    step(
        "train",
        lambda: prepare_classifier(run_dir, synthetic_id),
        lambda: train(cfg, run_dir, progress=progress, synthetic=use_synthetic),
        every=True,
    )
    step(
        "evaluate",
        lambda: RunDir(run_dir).is_complete(f"evaluate {result.split}"),
        lambda: evaluate_run(
            run_dir,
            split=result.split,
            batch_size=cfg.train.batch_size,
            num_workers=cfg.train.num_workers,
        ),
        every=False,
    )
    evaluated = RunDir(run_dir).record(f"evaluate {result.split}")
    assert evaluated is not None  # written by evaluate_run above, or complete
    result.metrics = evaluated["summary"]
    result.intervals = evaluated.get("intervals") or {}
    result.localisation = evaluated.get("localisation")
    result.report = step(
        "report", lambda: False, lambda: write_report(run_dir, result.split), every=False
    )
    return result
