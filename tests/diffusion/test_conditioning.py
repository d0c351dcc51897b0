"""Eq. 1–2 (and Eq. 4's unconditional input) with a tiny, randomly initialised CLIPTextModel."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from transformers import CLIPTextModel

from trcgl import __version__
from trcgl.diffusion.conditioning import PromptConditioner, read_context
from trcgl.diffusion.text import TINY_TEXT_CONFIG, load_text_encoder, load_tokenizer
from trcgl.errors import ConfigError, DataError

PROMPTS = [
    "chest x-ray, PA view: pneumothorax, left apical",
    "chest x-ray, supine AP view: hydropneumothorax, pleural left apical, support devices",
    "chest x-ray, lateral view: azygos lobe, lobar",
]
M = 8
D = TINY_TEXT_CONFIG["hidden_size"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="module")
def encoder() -> CLIPTextModel:
    torch.manual_seed(0)
    return load_text_encoder(None, TINY_TEXT_CONFIG)


def make(encoder, tokenizer, **kwargs) -> PromptConditioner:
    torch.manual_seed(1)
    return PromptConditioner(encoder, tokenizer, **kwargs)


def test_text_encoder_is_frozen(encoder):
    assert not encoder.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert encoder.config.hidden_size == D and encoder.config.vocab_size == 49408


def test_text_encoder_errors():
    with pytest.raises(ConfigError, match=r"needs a source"):
        load_text_encoder(None)
    with pytest.raises(ConfigError, match=r"not both"):
        load_text_encoder("some/model", TINY_TEXT_CONFIG)
    with pytest.raises(ConfigError, match=r"cannot load a CLIP text encoder.*hf download"):
        load_text_encoder("trcgl-test/no-such-text-encoder")


def test_eq2_shape_context_rows_and_encoder_rows(encoder, tokenizer):
    cond = make(encoder, tokenizer, num_context=M)
    assert cond.context.shape == (M, D)
    assert 0.01 < cond.context.std().item() < 0.03  # N(0, 0.02²)
    out = cond.encode(PROMPTS)
    assert out.shape == (len(PROMPTS), M + 77, D) == (len(PROMPTS), cond.sequence_length, D)
    for row in out:
        torch.testing.assert_close(row[:M], cond.context, rtol=0, atol=0)
    ids = tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
    torch.testing.assert_close(cond.tokenize(PROMPTS), ids, rtol=0, atol=0)
    with torch.no_grad():
        reference = encoder(input_ids=ids).last_hidden_state
    torch.testing.assert_close(out[:, M:], reference, rtol=1e-5, atol=1e-6)
    # Each prompt is encoded like in any batch (duplicates are encoded once).
    torch.testing.assert_close(cond.encode([PROMPTS[1]] * 2)[1], out[1], rtol=1e-5, atol=1e-6)


def test_gradients_reach_only_the_context(encoder, tokenizer):
    cond = make(encoder, tokenizer)
    cond.train()
    assert cond.training and not cond.text_encoder.training
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    context_before = cond.context.detach().clone()
    optimizer = torch.optim.AdamW(cond.parameters(), lr=1e-2, weight_decay=0.1)
    out = cond.encode(PROMPTS)
    loss = (out**2).mean() + out[:, M:].sum() * 0  # a dummy loss touching both parts
    loss.backward()
    assert cond.context.grad is not None and cond.context.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    optimizer.step()
    assert not torch.equal(cond.context.detach(), context_before)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert cond.trainable_parameters() == [cond.context]


def test_unconditional_is_the_empty_prompt(encoder, tokenizer):
    cond = make(encoder, tokenizer)
    uncond = cond.encode_unconditional(3)
    assert uncond.shape == (3, M + 77, D)
    torch.testing.assert_close(uncond, cond.encode([""] * 3), rtol=0, atol=0)
    torch.testing.assert_close(uncond[:, :M], cond.context.expand(3, -1, -1), rtol=0, atol=0)


def test_cache_gives_the_same_embeddings(encoder, tokenizer):
    plain = make(encoder, tokenizer, cache_size=0)
    cached = make(encoder, tokenizer, cache_size=2)
    first = cached.encode(PROMPTS)
    again = cached.encode(PROMPTS[::-1])
    assert cached.cache_hits >= 1 and len(cached._cache) == 2
    torch.testing.assert_close(again, first.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(first, plain.encode(PROMPTS), rtol=1e-5, atol=1e-6)
    cached.load_state_dict(cached.state_dict())
    assert not cached._cache  # a new state may hold other encoder weights


def test_long_prompts_are_truncated_to_77_tokens(encoder, tokenizer):
    cond = make(encoder, tokenizer)
    long = "chest x-ray, PA view: " + ", ".join(["pneumothorax"] * 100)
    ids = cond.tokenize([long, "short"])
    assert ids.shape == (2, 77) and ids[0, -1].item() == tokenizer.eos_token_id
    assert cond.encode([long]).shape == (1, M + 77, D)


def test_save_load_round_trip(encoder, tokenizer, tmp_path):
    cond = make(encoder, tokenizer, num_context=4)
    with torch.no_grad():
        cond.context.add_(torch.randn_like(cond.context))
    path = tmp_path / "ctx" / "context.safetensors"
    cond.save_context(path)
    assert [p.name for p in path.parent.iterdir()] == ["context.safetensors"]  # no temp left
    with safe_open(str(path), framework="pt") as fh:
        assert list(fh.keys()) == ["context"]
        meta = fh.metadata()
    assert meta["m"] == "4" and meta["d"] == str(D) and meta["trcgl_version"] == __version__
    assert "random-init" in meta["encoder"]
    other = make(encoder, tokenizer, num_context=4)
    assert not torch.equal(other.encode(PROMPTS), cond.encode(PROMPTS))
    assert other.load_context(path)["m"] == "4"
    torch.testing.assert_close(other.encode(PROMPTS), cond.encode(PROMPTS), rtol=0, atol=0)
    tensor, _ = read_context(path)
    assert tensor.shape == (4, D)


def test_load_context_of_another_shape(encoder, tokenizer, tmp_path):
    path = tmp_path / "context.safetensors"
    make(encoder, tokenizer, num_context=4).save_context(path)
    with pytest.raises(ConfigError, match=r"\(4, 64\).*\(8, 64\).*set num_context=4"):
        make(encoder, tokenizer, num_context=8).load_context(path)
    torch.manual_seed(0)
    wider = load_text_encoder(None, {**TINY_TEXT_CONFIG, "hidden_size": 32})
    with pytest.raises(ConfigError, match=r"d: file 64 vs 32.*hidden size"):
        PromptConditioner(wider, tokenizer, num_context=4).load_context(path)
    with pytest.raises(DataError, match=r"not found"):
        make(encoder, tokenizer).load_context(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(DataError, match=r"not a readable safetensors"):
        make(encoder, tokenizer).load_context(tmp_path / "junk.safetensors")
