"""(slow) CoVE with the real SmolLM2-135M through the harness on the tiny fixture."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_cove_smollm2_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from bench.runs.run import run

    cache = tmp_path / "cache"
    cache.mkdir()
    shared = Path(os.environ.get("BENCH_CACHE_DIR", REPO / ".cache")) / "backbones"
    if shared.exists():  # reuse the converted SmolLM2 rather than converting it again (~40 s)
        (cache / "backbones").symlink_to(shared.resolve())
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    overrides = ["cove.max_train_users=8", "cove.epochs=1", "cove.batch_size=4", "cove.grad_accum=1",
                 "cove.max_history=5", "cove.max_title_words=8", "cove.compression_ratio=2",
                 "eval.max_eval_users=8", "eval.max_valid_users=4"]
    outcome = run("cove", "tiny", overrides=overrides, progress=False, log=lambda _: None)
    record = outcome.record
    info = record["method_info"]
    assert info["backbone"] == "SmolLM2-135M-Instruct" and info["base_vocab"] == 49_152
    assert info["item_table_rows"] == 15 and info["item_table_bytes"] == 2 * 15 * 576 * 4  # 30 items / 2
    assert info["epochs_run"] == 1 and info["optimizer_steps"] == 2
    assert 0 < info["trainable_params"] < 0.01 * info["backbone_params"]
    assert record["subsample"]["train"] == {"max_train_users": 8, "seed": 0, "users": 8}
    assert record["num_eval_requests"] == 8
    assert 0.0 <= record["metrics"]["ndcg@10"] <= 1.0 and record["samples_per_sec"] > 0
    assert list((cache / "work" / "tiny").glob("cove-*/best-e0001.safetensors"))


@pytest.mark.slow
def test_piecewise_prompt_ids_equal_whole_text_tokenisation():
    """The encoder's pieces give what SmolLM2's tokenizer gives for the whole prompt text."""
    from transformers import AutoTokenizer

    from bench.data.types import Catalogue
    from bench.train.backbone import smollm2_dir
    from methods.cove.prompts import INSTRUCTION, PromptEncoder, PromptSettings, add_item_tokens, item_token

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(Path(os.environ.get("BENCH_CACHE_DIR", REPO / ".cache"))))
    catalogue = Catalogue(["a", "b", "c"], ["Red Lipstick, matte", None, 'Serum "Glow" 30ml'])
    base = add_item_tokens(tokenizer, 3, len(tokenizer))
    encoder = PromptEncoder(tokenizer, catalogue, base, PromptSettings())
    history = [2, 0, 1]
    text = INSTRUCTION + ", ".join(f'{item_token(i)}: "{catalogue.title_or(i)}"' for i in history) + ","
    assert encoder.prompt(history) == tokenizer(text)["input_ids"]
    full = text + f' {item_token(0)}: "{catalogue.title_or(0)}"'
    assert encoder.training_sequence(history, 0) == tokenizer(full)["input_ids"]
