"""The native SASRec: learns a rule (and not a broken one), its one-pass loss is the mean of the
per-prefix losses, a batch's width never changes scores, and an interrupted run resumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_model_threads
from tiny import rule_dataset

from bench.errors import BenchError
from bench.method import RunContext, seed_everything
from bench.runs.evaluate import evaluate

torch = pytest.importorskip("torch")

from methods.sasrec_native.method import NativeSASRecMethod  # noqa: E402
from methods.sasrec_native.model import SASRec, SASRecConfig, all_position_loss  # noqa: E402
from methods.sasrec_native.settings import parse_settings  # noqa: E402
from methods.sasrec_native.trainer import right_padded  # noqa: E402

SMALL = dict(hidden_size=32, inner_size=64, n_heads=2, n_layers=2, dropout=0.1, batch_size=32,
             learning_rate=0.005, max_seq_length=10)


@pytest.fixture(autouse=True)
def few_threads() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(tiny_model_threads())
    yield
    torch.set_num_threads(threads)


def make(work_dir: Path, validate: Any = None, **settings: Any) -> NativeSASRecMethod:
    seed_everything(0)
    return NativeSASRecMethod({**SMALL, **settings}, RunContext(work_dir=work_dir, validate=validate,
                                                               log=lambda _: None))


@pytest.mark.parametrize("rule", ["next", "random"])
def test_learns_the_chain_only_when_there_is_one(rule: str, tmp_path: Path):
    dataset = rule_dataset(num_items=20, num_users=300, length=8, rule=rule, seed=0)
    method = make(tmp_path, epochs=30, patience=0)
    method.fit(dataset)
    hr1 = evaluate(method, dataset.split.test, dataset.num_items, ks=(1,), progress=False).metrics["hr@1"]
    if rule == "next":
        assert hr1 > 0.9
    else:
        assert hr1 < 0.2  # chance is 0.05
    info = method.describe()
    assert info["epochs_run"] == 30 and info["stopped_by"] == "epochs" and info["train_sequences"] == 300


def test_one_pass_loss_is_the_mean_of_the_per_prefix_losses():
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(num_items=9, max_seq_length=6, hidden_size=16, inner_size=32, n_heads=2,
                                dropout=0.0)).eval()
    sequences = [[3, 1, 4, 1, 5], [2, 7], [8, 0, 6]]
    inputs = right_padded([s[:-1] for s in sequences])
    targets = right_padded([s[1:] for s in sequences])
    one_pass = all_position_loss(model, inputs, targets)
    per_prefix = []
    for seq in sequences:
        for end in range(1, len(seq)):
            state = model.last_states(right_padded([seq[:end]]), torch.tensor([end]))
            per_prefix.append(torch.nn.functional.cross_entropy(model.item_logits(state), torch.tensor([seq[end]])))
    assert len(per_prefix) == 4 + 1 + 2
    assert torch.allclose(one_pass, torch.stack(per_prefix).mean(), atol=1e-6)
    # The binary loss of the paper runs on the same positions.
    negatives = torch.where(targets > 0, (targets % 9) + 1, targets)
    assert torch.isfinite(all_position_loss(model, inputs, targets, "bce", negatives))


def test_a_batch_scores_each_history_as_it_would_alone(tmp_path: Path):
    dataset = rule_dataset(num_items=15, num_users=40, length=6, seed=1)
    method = make(tmp_path, epochs=1)
    method.fit(dataset)
    histories = [[1, 2, 3, 4, 5], [7], [], [9, 10], list(range(14)) * 2]
    together = method.score([0] * len(histories), histories)
    alone = torch.cat([method.score([0], [h]) for h in histories])
    sorted_order = sorted(range(len(histories)), key=lambda i: len(histories[i]))
    by_length = method.score([0] * len(histories), [histories[i] for i in sorted_order])
    assert together.shape == (5, 15) and together.dtype == torch.float32
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.allclose(together[sorted_order], by_length, atol=1e-5)


def test_bucketed_and_plain_batches_train_the_same_targets(tmp_path: Path):
    dataset = rule_dataset(num_items=15, num_users=64, length=6, seed=2)
    for bucket in (True, False):
        method = make(tmp_path / str(bucket), epochs=1, length_buckets=bucket)
        method.fit(dataset)
        info = method.describe()
        assert info["train_sequences"] == 64 and info["optimizer_steps"] == 2
    # Users of one length: bucketing removes all padding.
    assert info["padding_fraction"] == 0.0


class Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_after_its_last_epoch(tmp_path: Path):
    dataset = rule_dataset(num_items=15, num_users=60, length=6, seed=3)
    scores = iter([0.1, 0.2, 0.3, 0.4])
    straight = make(tmp_path / "straight", validate=lambda m: next(scores), epochs=3, patience=0)
    straight.fit(dataset)

    calls = []

    def stop_at_second(method: Any) -> float:
        calls.append(1)
        if len(calls) == 2:
            raise Interrupt
        return [0.1, 0.2, 0.3][len(calls) - 1]

    with pytest.raises(Interrupt):
        make(tmp_path / "resumed", validate=stop_at_second, epochs=3, patience=0).fit(dataset)
    later = iter([0.2, 0.3])
    resumed = make(tmp_path / "resumed", validate=lambda m: next(later), epochs=3, patience=0)
    resumed.fit(dataset)
    assert resumed.describe()["resumed_after_epoch"] == 1 and resumed.describe()["best_epoch"] == 3
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_early_stopping_keeps_the_best_epoch(tmp_path: Path):
    dataset = rule_dataset(num_items=15, num_users=60, length=6, seed=4)
    history = iter([0.3, 0.5, 0.4, 0.2, 0.1])
    snapshots = []

    def validate(method: Any) -> float:
        snapshots.append(method.score([0], [[1, 2, 3]]).clone())
        return next(history)

    method = make(tmp_path, validate=validate, epochs=10, patience=2)
    method.fit(dataset)
    info = method.describe()
    assert info["stopped_by"] == "early_stopping" and info["epochs_run"] == 4 and info["best_epoch"] == 2
    assert torch.allclose(method.score([0], [[1, 2, 3]]), snapshots[1])


def test_settings_refuse_bad_values():
    with pytest.raises(BenchError, match=r"\[sasrec_native\]\.loss"):
        parse_settings({"loss": "hinge"})
    with pytest.raises(BenchError, match=r"\[sasrec_native\]\.n_heads"):
        parse_settings({"hidden_size": 64, "n_heads": 3})
    with pytest.raises(BenchError, match=r"\[sasrec_native\]\.batch_size"):
        parse_settings({"batch_size": 0})
    with pytest.raises(BenchError, match=r"\[sasrec_native\]\.nope"):
        parse_settings({"nope": 1})
    from bench.config import load_config, method_config

    assert parse_settings(method_config(load_config(), "sasrec_native", "paper")["sasrec_native"]).loss == "bce"


def test_resume_only_loads_a_finished_run_and_refuses_to_train(tmp_path: Path):
    """RunContext.resume_only (bench rescore, bench speed --trained): a finished work dir is loaded with
    nothing trained and scores like the original; an unfinished one is an error, not a new training."""
    from bench.errors import BenchError

    dataset = rule_dataset(num_items=15, num_users=60, length=6, seed=3)
    first = make(tmp_path / "run", epochs=2, patience=0)
    first.fit(dataset)
    seed_everything(0)
    again = NativeSASRecMethod({**SMALL, "epochs": 2, "patience": 0},
                               RunContext(work_dir=tmp_path / "run", log=lambda _: None, resume_only=True))
    again.fit(dataset)
    assert again.describe()["resumed_after_epoch"] == 2
    assert torch.equal(again.score([0], [[1, 2, 3]]), first.score([0], [[1, 2, 3]]))
    with pytest.raises(BenchError, match="no finished sasrec_native training to load"):
        NativeSASRecMethod({**SMALL, "epochs": 2, "patience": 0},
                           RunContext(work_dir=tmp_path / "empty", log=lambda _: None, resume_only=True)).fit(dataset)
    assert not (tmp_path / "empty" / "progress.json").exists()
