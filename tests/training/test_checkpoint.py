"""The one checkpoint writer both trainers use (``trcgl.training.checkpoint``)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from trcgl.errors import DataError
from trcgl.training.checkpoint import (
    latest_checkpoint,
    load_optimizer,
    restore_rng,
    write_checkpoint,
)


def _optimizer() -> torch.optim.Optimizer:
    weight = torch.nn.Parameter(torch.arange(6.0).reshape(2, 3))
    opt = torch.optim.AdamW([weight], lr=0.1)
    weight.grad = torch.ones_like(weight)
    opt.step()
    return opt


def test_a_checkpoint_round_trips_and_replaces_older_ones_of_its_kind(tmp_path):
    opt = _optimizer()
    private = torch.Generator().manual_seed(7)
    torch.manual_seed(3)
    written = []

    def context(path):
        written.append(path.name)
        save_file({"context": torch.ones(2, 4)}, str(path), metadata={"m": "2"})

    for step in (1, 2):
        final = write_checkpoint(
            tmp_path,
            f"step-{step:03d}",
            {"context": context, "unet": {"w": torch.full((3,), float(step))}, "frozen": {}},
            opt,
            {"step": step},
            state_file="state.json",
            rng_extra={"train_generator": private.get_state()},
        )
    (tmp_path / "epoch-0001").mkdir()  # another kind of checkpoint: left alone
    write_checkpoint(tmp_path, "step-003", {}, opt, {"step": 3}, keep={"step-002"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0001",
        "latest.json",
        "step-002",
        "step-003",
    ]
    assert written == ["context.safetensors", "context.safetensors"]
    assert not (final / "frozen.safetensors").exists()  # an empty mapping writes no file
    assert torch.equal(load_file(str(final / "unet.safetensors"))["w"], torch.full((3,), 2.0))
    assert json.loads((final / "state.json").read_text()) == {"step": 2}
    assert latest_checkpoint(tmp_path, state_file="trainer.json") == tmp_path / "step-003"

    expected = torch.rand(3)
    torch.manual_seed(99)
    extra = restore_rng(final / "rng.safetensors")
    assert torch.equal(torch.rand(3), expected)  # the global state was restored
    again = torch.Generator()
    again.set_state(extra["train_generator"])
    assert torch.equal(torch.rand(2, generator=again), torch.rand(2, generator=private))

    fresh = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 3))], lr=0.5)
    load_optimizer(fresh, final / "optimizer.safetensors")
    state, saved = fresh.state_dict(), opt.state_dict()
    assert state["param_groups"][0]["lr"] == 0.1
    assert torch.equal(state["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])


def test_a_pointer_to_an_incomplete_checkpoint_is_a_clear_error(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    write_checkpoint(tmp_path, "epoch-0001", {}, _optimizer(), {"epoch": 1})
    (tmp_path / "epoch-0001" / "trainer.json").unlink()
    with pytest.raises(DataError, match="incomplete"):
        latest_checkpoint(tmp_path)
