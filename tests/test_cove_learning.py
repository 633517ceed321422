"""CoVE learns a deterministic next-item rule and learns nothing from a random one.

A tiny random Llama (bench.train.backbone.tiny_backbone) is fine-tuned end to end through the real
method (item tokens, LoRA, item tables, trainer) and scored by the shared evaluator.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_model_threads
from tiny import rule_dataset, tiny_backbone

from bench.method import RunContext, seed_everything
from bench.runs.evaluate import evaluate
from methods.cove.method import CoVEMethod
from methods.cove.prompts import prompt_texts

# Prompts keep the 3 most recent items, so training (3-item histories) and test prompts look alike.
CONFIG = {"epochs": 12, "batch_size": 16, "grad_accum": 1, "learning_rate": 3e-3, "warmup_ratio": 0.0,
          "patience": 0, "max_history": 3}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(tiny_model_threads())
    yield
    torch.set_num_threads(threads)


def hr_at_1(rule: str, tmp_path: Path) -> float:
    dataset = rule_dataset(num_items=20, num_users=200, length=6, rule=rule, seed=0)
    model, tokenizer = tiny_backbone(prompt_texts(dataset.catalogue))
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    seed_everything(0)
    method = CoVEMethod({**CONFIG, "model": str(tmp_path / "lm")},
                        RunContext(work_dir=tmp_path / "work", log=lambda _: None))
    method.fit(dataset)
    result = evaluate(method, dataset.split.test, dataset.num_items, ks=(1,), progress=False)
    return result.metrics["hr@1"]


def test_learns_a_deterministic_next_item_rule(tmp_path: Path):
    assert hr_at_1("next", tmp_path) > 0.9


def test_random_next_items_stay_near_chance(tmp_path: Path):
    # Chance is 1/20 = 0.05; 200 test users give a standard error of ~0.015.
    assert hr_at_1("random", tmp_path) < 0.15
