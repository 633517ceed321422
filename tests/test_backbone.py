"""The shared backbone loader: offline errors, the tiny test model, and (slow) real SmolLM2."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny import tiny_backbone, word_tokenizer

from bench.errors import BenchError
from bench.train.backbone import load_backbone, save_random_backbone, smollm2_gguf


def test_tiny_backbone_runs_batched_with_left_padding():
    model, tokenizer = tiny_backbone(["here is a list of items", 'red lipstick "0", blue serum'])
    assert tokenizer.padding_side == "left" and tokenizer.pad_token_id == 0
    batch = tokenizer(["here is a list", 'red lipstick "0"'], return_tensors="pt", padding=True)
    assert batch["input_ids"][0, 0].item() == 0 and batch["input_ids"][1, 0].item() != 0
    assert tokenizer.unk_token_id not in batch["input_ids"].tolist()[1]
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    names = {name.split(".")[-1] for name, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= names


def test_word_tokenizer_matches_added_tokens_before_splitting():
    tokenizer = word_tokenizer(['items: "red"'])
    base = len(tokenizer)
    tokenizer.add_tokens([f"<|{i}|>" for i in range(3)], special_tokens=True)
    ids = tokenizer("items: <|2|>", add_special_tokens=False)["input_ids"]
    assert ids[-1] == base + 2


def test_missing_folder_is_a_clear_error(tmp_path: Path):
    with pytest.raises(BenchError, match="does not exist"):
        load_backbone(str(tmp_path / "nope"), "cpu", tmp_path)


def test_folder_without_config_is_a_clear_error(tmp_path: Path):
    (tmp_path / "model").mkdir()
    with pytest.raises(BenchError, match="no config.json"):
        load_backbone(str(tmp_path / "model"), "cpu", tmp_path)


def test_gguf_env_pointing_nowhere_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BENCH_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(BenchError, match="BENCH_SMOLLM2_GGUF"):
        smollm2_gguf()


def test_local_folder_round_trip(tmp_path: Path):
    model, tokenizer = tiny_backbone(["a b c"])
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    loaded, loaded_tok = load_backbone(str(tmp_path / "tiny"), "cpu", tmp_path)
    assert loaded_tok.padding_side == "left" and loaded_tok.pad_token == "<pad>"
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits)


@pytest.mark.slow
def test_smollm2_loads_offline_and_second_load_hits_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    model, tokenizer = load_backbone("smollm2", "cpu", tmp_path)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.vocab_size == 49_152
    assert tokenizer.pad_token == "<|im_end|>" and tokenizer.padding_side == "left"
    batch = tokenizer(["Hello", "The capital of France is"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == 49_152 and torch.isfinite(logits).all()
    assert (tmp_path / "backbones" / "smollm2" / "model.safetensors").exists()

    def no_gguf() -> Path:
        raise AssertionError("second load re-read the GGUF instead of the cache")

    monkeypatch.setattr("bench.train.backbone.smollm2_gguf", no_gguf)
    again, _ = load_backbone("smollm2", "cpu", tmp_path)
    with torch.no_grad():
        assert torch.equal(again(**batch).logits, logits)


def test_random_backbone_folder_loads_and_refuses_to_overwrite(tmp_path: Path):
    _, tokenizer = tiny_backbone(["a b c"])
    tokenizer.save_pretrained(tmp_path / "tok")
    out = save_random_backbone(tmp_path / "random-h16-l1", tmp_path / "tok", hidden=16, layers=1, seed=3)
    model, loaded_tok = load_backbone(str(out), "cpu", tmp_path)
    assert model.config.hidden_size == 16 and model.config.num_hidden_layers == 1
    assert model.config.vocab_size == len(loaded_tok) and loaded_tok.padding_side == "left"
    assert "not a pretrained model" in (out / "SOURCE.txt").read_text()
    with pytest.raises(BenchError, match="not empty"):
        save_random_backbone(out, tmp_path / "tok")
    with pytest.raises(BenchError, match="multiple of 4"):
        save_random_backbone(tmp_path / "bad", tmp_path / "tok", hidden=10)
