"""The mixed-precision setting and accelerate's one-precision-per-process state."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from trcgl.training.precision import make_accelerator, resolve_mixed_precision


def test_one_process_can_train_in_two_precisions_one_after_the_other():
    """`trcgl run` trains the generator (diffusion.mixed_precision), then the classifiers
    (train.mixed_precision) in one process; accelerate alone refuses the second setting."""
    first = make_accelerator("no", cpu=True)
    assert first.mixed_precision == "no"
    with pytest.raises(ValueError, match="already been initialized"):
        Accelerator(mixed_precision="bf16", cpu=True)
    second = make_accelerator("bf16", cpu=True)
    assert second.mixed_precision == "bf16"
    layer = torch.nn.Linear(4, 3)
    with second.autocast():
        assert layer(torch.ones(2, 4)).dtype == torch.bfloat16
    if not torch.cuda.is_available():
        assert resolve_mixed_precision("auto") == "no"
        assert make_accelerator("auto", cpu=True).mixed_precision == "no"
    assert make_accelerator("no", cpu=True).mixed_precision == "no"  # as the suite expects
    with make_accelerator("no", cpu=True).autocast():
        assert layer(torch.ones(2, 4)).dtype == torch.float32
