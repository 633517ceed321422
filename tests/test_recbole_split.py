"""RecBole sees exactly our split: same training pairs, validation and test requests, all items."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.data.split import global_time, leave_one_out
from bench.data.types import EvalCases, Split
from bench.errors import BenchError
from methods.recbole_data import load_recbole_data, recbole_isolated, recbole_settings, training_pairs

SECTION = {"epochs": 1, "max_seq_length": 3, "hidden_size": 8, "inner_size": 8, "n_layers": 1, "n_heads": 1}


def decoded(loader, id_token) -> EvalCases:
    """A RecBole dataloader's rows, back in our user and item indices."""
    inter = loader.dataset.inter_feat
    users = [int(id_token["user_id"][u]) for u in inter["user_id"].tolist()]
    histories = [[int(id_token["item_id"][i]) for i in row[:length]]
                 for row, length in zip(inter["item_id_list"].tolist(), inter["item_length"].tolist())]
    targets = [int(id_token["item_id"][i]) for i in inter["item_id"].tolist()]
    return EvalCases(users, histories, targets)


def recbole_view(split: Split, num_items: int, tmp_path: Path):
    with recbole_isolated():
        data = load_recbole_data("SASRec", SECTION, split, num_items, tmp_path, "cpu", 0)
    return data, data.dataset.field2id_token


def truncated(cases: EvalCases, length: int) -> EvalCases:
    return EvalCases(cases.users, [h[-length:] for h in cases.histories], cases.targets)


def test_leave_one_out_is_reproduced_exactly(tmp_path: Path) -> None:
    # Users with 3 items are the case RecBole's own 'LS' split gets wrong (their validation
    # item lands in training); long users exercise truncation; items 9-11 never occur.
    sequences = [[0, 1, 2], [3, 4, 5, 6, 7, 8, 0, 1], [2, 4, 6], [5, 5, 1, 7]]
    split = leave_one_out(sequences)
    data, id_token = recbole_view(split, 12, tmp_path)

    assert decoded(data.train, id_token) == training_pairs(split.train, 3)
    assert decoded(data.valid, id_token) == truncated(split.valid, 3)
    assert decoded(data.test, id_token) == truncated(split.test, 3)
    # The [PAD] token plus every catalogue item, including those never seen.
    assert data.dataset.item_num == 13
    assert sorted(int(t) for t in id_token["item_id"][1:]) == list(range(12))


def test_global_time_split_is_reproduced_exactly(tmp_path: Path) -> None:
    # User 1 has no training items; user 2 has several valid and test requests.
    split = global_time(train=[[0, 1, 2], [], [3, 4]], valid=[[3], [5], [5, 6]], test=[[4], [6, 0], [7, 1]])
    data, id_token = recbole_view(split, 9, tmp_path)

    assert decoded(data.train, id_token) == training_pairs(split.train, 3)
    assert decoded(data.valid, id_token) == truncated(split.valid, 3)
    assert decoded(data.test, id_token) == truncated(split.test, 3)
    # User 1's first item has no history, so global_time makes no request of it.
    assert len(decoded(data.valid, id_token)) == 3 and len(decoded(data.test, id_token)) == 5
    assert data.counts["valid_empty_history_dropped"] == 0


def test_training_pairs_are_every_prefix_truncated() -> None:
    pairs = training_pairs([[1, 2, 3, 4], [5]], max_seq_length=2)
    assert pairs.histories == [[1], [1, 2], [2, 3]] and pairs.targets == [2, 3, 4] and pairs.users == [0, 0, 0]


def test_settings_refuse_keys_the_harness_owns(tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="data_path"):
        recbole_settings({"data_path": "x"}, tmp_path, tmp_path, "cpu", 0)
    with pytest.raises(BenchError, match="loss_type"):
        recbole_settings({"loss_type": "BPR"}, tmp_path, tmp_path, "cpu", 0)
    settings = recbole_settings({"max_seq_length": 7, "stopping_step": 2}, tmp_path, tmp_path, "cpu", 5)
    assert settings["MAX_ITEM_LIST_LENGTH"] == 7 and settings["train_neg_sample_args"] is None
    assert settings["valid_metric"] == "NDCG@10" and settings["seed"] == 5 and settings["stopping_step"] == 2
