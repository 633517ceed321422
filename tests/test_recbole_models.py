"""SASRec and GRU4Rec through RecBole learn a learnable rule, not a random one, and score in our order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_model_threads
from tiny import rule_dataset

from bench.data.types import Catalogue, Dataset
from bench.method import RunContext
from bench.runs.evaluate import evaluate
from methods.recbole_models import GRU4RecMethod, RecBoleMethod, SASRecMethod

NUM_ITEMS = 20
TINY = {
    "sasrec": {"hidden_size": 32, "inner_size": 64, "n_layers": 1, "n_heads": 1,
               "hidden_dropout_prob": 0.1, "attn_dropout_prob": 0.1},
    "gru4rec": {"embedding_size": 32, "hidden_size": 32, "num_layers": 1, "dropout_prob": 0.1},
}
CLASSES: dict[str, type[RecBoleMethod]] = {"sasrec": SASRecMethod, "gru4rec": GRU4RecMethod}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core box threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(tiny_model_threads())
    yield
    torch.set_num_threads(threads)


def fitted(name: str, dataset: Dataset, tmp_path: Path, **overrides: object) -> RecBoleMethod:
    config = {"epochs": 8, "stopping_step": 3, "learning_rate": 0.01, "train_batch_size": 64,
              "eval_batch_size": 256, "max_seq_length": 50, "loss_type": "CE", **TINY[name], **overrides}
    method = CLASSES[name](config, RunContext(work_dir=tmp_path, seed=0, log=lambda message: None))
    method.fit(dataset)
    return method


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_learns_the_next_item_rule(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # RecBole must not write log/ or log_tensorboard/ here
    monkeypatch.setattr(sys, "argv", ["bench", "--epochs=99"])  # nor read our command line
    dataset = rule_dataset(num_items=NUM_ITEMS, num_users=200, length=6, rule="next")
    method = fitted(name, dataset, tmp_path / "work")

    result = evaluate(method, dataset.split.test, NUM_ITEMS, ks=(1, 5), progress=False)
    assert result.metrics["hr@1"] > 0.9  # chance: 0.05
    # RecBole's ids are not ours, so a correct hit rate above also proves the column mapping.
    assert not torch.equal(method.recbole_ids.cpu(), torch.arange(1, NUM_ITEMS + 1))
    single = method.score(list(range(NUM_ITEMS)), [[item] for item in range(NUM_ITEMS)])
    assert single.argmax(dim=1).tolist() == [(item + 1) % NUM_ITEMS for item in range(NUM_ITEMS)]

    facts = method.describe()
    assert facts["epochs_max"] == 8 and facts["epochs_run"] == 8
    assert facts["model_class"].endswith(name.replace("sasrec", "SASRec").replace("gru4rec", "GRU4Rec"))
    assert facts["parameters"] > 0 and facts["recbole_best_valid_ndcg@10"] > 0.9
    assert (tmp_path / "work" / "recbole" / f"{method.model_name}.pth").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_stays_near_chance_on_random_sequences(name: str, tmp_path: Path) -> None:
    dataset = rule_dataset(num_items=NUM_ITEMS, num_users=200, length=6, rule="random")
    method = fitted(name, dataset, tmp_path, epochs=30, stopping_step=1)

    result = evaluate(method, dataset.split.test, NUM_ITEMS, ks=(5,), progress=False)
    assert result.metrics["hr@5"] < 0.45  # chance: 0.25
    facts = method.describe()
    # Nothing to learn, so validation stops improving: RecBole stops after stopping_step + 1 misses.
    assert facts["stopped_by"] == "early_stopping"
    assert facts["epochs_run"] == facts["best_epoch"] + 2


def test_scores_every_catalogue_item_and_empty_histories(tmp_path: Path) -> None:
    base = rule_dataset(num_items=NUM_ITEMS, num_users=100, length=5, rule="next")
    extra = 5  # catalogue items that never occur in any sequence
    catalogue = Catalogue(base.catalogue.asins + [f"X{i}" for i in range(extra)],
                          base.catalogue.titles + [None] * extra)
    dataset = Dataset("with-unseen", catalogue, base.split)
    method = fitted("sasrec", dataset, tmp_path, epochs=2)

    scores = method.score([0, 1, 2], [[], [3], list(range(NUM_ITEMS)) * 5])
    assert scores.shape == (3, NUM_ITEMS + extra)
    assert torch.isfinite(scores).all()


def test_time_budget_stops_between_batches_and_keeps_what_trained(tmp_path: Path) -> None:
    """Checked before every batch: a budget that is already used up stops inside the first epoch (it
    once ran a whole epoch and its validation past the budget), and the model still scores."""
    dataset = rule_dataset(num_items=NUM_ITEMS, num_users=50, length=5, rule="next")
    method = SASRecMethod({"epochs": 50, "max_seq_length": 50, "train_batch_size": 16, **TINY["sasrec"]},
                          RunContext(work_dir=tmp_path, max_train_minutes=1e-6, log=lambda message: None))
    method.fit(dataset)
    facts = method.describe()
    assert facts["stopped_by"] == "max_train_minutes" and facts["epochs_run"] == 0
    assert facts["best_epoch"] is None and facts["checkpoint"].startswith("the partial first epoch")
    assert facts["train_batches"] == 0 and facts["epochs_max"] == 50
    assert torch.isfinite(method.score([0], [[1, 2]])).all()


@pytest.mark.parametrize("name", ["sasrec", "gru4rec"])
def test_runs_end_to_end_through_the_harness(name: str, isolated: Path) -> None:
    from bench.runs.run import run

    outcome = run(name, "tiny", overrides=[f"{name}.epochs=2", f"{name}.hidden_size=16"], progress=False,
                  log=lambda message: None)
    record = outcome.record
    assert set(record["metrics"]) >= {"ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20"}
    assert record["num_eval_requests"] == 40
    info = record["method_info"]
    assert info["recbole_version"] == "1.2.1" and info["epochs_run"] == 2 and 1 <= info["best_epoch"] <= 2
    assert record["config"][name]["hidden_size"] == 16


class Interrupt(Exception):
    pass


def test_an_interrupted_training_resumes_after_its_last_epoch(tmp_path: Path) -> None:
    """Killed during epoch 3 (after epoch 2's state was saved), the next fit starts at epoch 3."""
    dataset = rule_dataset(num_items=NUM_ITEMS, num_users=60, length=6, rule="next")
    config = {"epochs": 4, "stopping_step": 10, "learning_rate": 0.01, "train_batch_size": 64,
              "eval_batch_size": 256, "max_seq_length": 50, "loss_type": "CE", **TINY["sasrec"]}

    def interrupt_at_epoch_2(message: str) -> None:
        if "epoch 2/4" in message:
            raise Interrupt

    with pytest.raises(Interrupt):
        SASRecMethod(config, RunContext(work_dir=tmp_path, seed=0, log=interrupt_at_epoch_2)).fit(dataset)
    logs: list[str] = []
    method = SASRecMethod(config, RunContext(work_dir=tmp_path, seed=0, log=logs.append))
    method.fit(dataset)
    facts = method.describe()
    assert facts["resumed_after_epoch"] == 2 and facts["epochs_run"] == 4 and facts["stopped_by"] == "epochs"
    assert [m.split(":")[0] for m in logs if "/4:" in m] == ["sasrec epoch 3/4", "sasrec epoch 4/4"]
    assert facts["train_batches"] == 2 * -(-facts["train_pairs"] // 64)  # this call trained epochs 3 and 4 only


def test_a_finished_training_is_loaded_not_continued(tmp_path: Path) -> None:
    """After early stopping, a second fit in the same work dir (rescore, speed --trained) trains nothing
    and scores exactly as the first; its twin without the marker trains again (the check can fail)."""
    dataset = rule_dataset(num_items=NUM_ITEMS, num_users=200, length=6, rule="random")
    first = fitted("sasrec", dataset, tmp_path, epochs=30, stopping_step=1)
    assert first.describe()["stopped_by"] == "early_stopping"
    users, histories = [0, 1], [[1, 2, 3], [4]]
    expected = first.score(users, histories)

    def again() -> RecBoleMethod:
        return fitted("sasrec", dataset, tmp_path, epochs=30, stopping_step=1)

    loaded = again()
    facts = loaded.describe()
    assert facts["loaded_finished_training"] and facts["train_batches"] == 0
    assert facts["epochs_run"] == first.describe()["epochs_run"] and facts["stopped_by"] == "early_stopping"
    assert torch.equal(loaded.score(users, histories), expected)

    (tmp_path / "recbole" / "finished.json").unlink()
    twin = again()  # without the marker RecBole resumes and trains at least one more epoch
    assert not twin.describe()["loaded_finished_training"] and twin.describe()["train_batches"] > 0


def test_resume_only_refuses_a_work_dir_without_a_finished_training(tmp_path: Path) -> None:
    from bench.errors import BenchError

    dataset = rule_dataset(num_items=NUM_ITEMS, num_users=50, length=5, rule="next")
    method = SASRecMethod({"epochs": 2, "max_seq_length": 50, **TINY["sasrec"]},
                          RunContext(work_dir=tmp_path, resume_only=True, log=lambda message: None))
    with pytest.raises(BenchError, match="no finished sasrec training to load"):
        method.fit(dataset)
