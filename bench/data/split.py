"""The one split implementation every method shares."""

from __future__ import annotations

from dataclasses import replace

from bench.data.types import EvalCases, Split

LEAVE_ONE_OUT = "leave_one_out"
GLOBAL_TIME = "global_time"


def leave_one_out(sequences: list[list[int]]) -> Split:
    """P5/TIGER: last item test, second-to-last validation, the rest training.

    Validation predicts seq[-2] from seq[:-2]; test predicts seq[-1] from seq[:-1]
    (the validation item is part of the test history, as in TIGER and RecBole).
    """
    short = [user for user, seq in enumerate(sequences) if len(seq) < 3]
    if short:
        raise ValueError(
            f"leave-one-out needs at least 3 items per user; user index {short[0]} has "
            f"{len(sequences[short[0]])} ({len(short)} such users)"
        )
    users = list(range(len(sequences)))
    train = [seq[:-2] for seq in sequences]
    valid = EvalCases(users, [seq[:-2] for seq in sequences], [seq[-2] for seq in sequences])
    test = EvalCases(users, [seq[:-1] for seq in sequences], [seq[-1] for seq in sequences])
    return Split(LEAVE_ONE_OUT, train, valid, test)


def global_time(train: list[list[int]], valid: list[list[int]], test: list[list[int]]) -> Split:
    """Pre-split by a global time cut (BIGRec/DEALRec lineage).

    Every validation or test interaction becomes one request whose history is all of
    the user's earlier items (train, then earlier valid/test items). Users whose whole
    history falls in a later period get requests with an empty-prefix history only if
    they have at least one earlier item; requests with no history are dropped.
    """
    if not len(train) == len(valid) == len(test):
        raise ValueError("train/valid/test must list the same users")
    valid_cases: tuple[list[int], list[list[int]], list[int]] = ([], [], [])
    test_cases: tuple[list[int], list[list[int]], list[int]] = ([], [], [])
    for user, (tr, va, te) in enumerate(zip(train, valid, test)):
        history = list(tr)
        for part, cases in ((va, valid_cases), (te, test_cases)):
            for item in part:
                if history:
                    cases[0].append(user)
                    cases[1].append(list(history))
                    cases[2].append(item)
                history.append(item)
    return Split(GLOBAL_TIME, [list(t) for t in train], EvalCases(*valid_cases), EvalCases(*test_cases))


SELECTION_TEXT = {
    "test": "validation requests (second-to-last item for leave-one-out)",
    "valid": "each user's last training item from the items before it (third-to-last for leave-one-out, the "
             "authors' training target); the reported validation requests are never used for selection",
}


def last_training_item_cases(train: list[list[int]]) -> EvalCases:
    """One request per user with two or more training items: train[:-1] -> train[-1]."""
    users = [u for u, seq in enumerate(train) if len(seq) >= 2]
    return EvalCases(users, [train[u][:-1] for u in users], [train[u][-1] for u in users])


def selection_split(split: Split, target: str) -> tuple[Split, str]:
    """The split a method is fitted on: its `valid` holds the requests used for early stopping, the
    best-epoch choice and any grid search, never the requests being reported.

    Reporting `test`: select on `valid` (the usual protocol; the split, and its hash, are unchanged).
    Reporting `valid`: selecting on it would pick epochs on the very numbers reported, so selection
    moves one position back, to the last training item.
    """
    split.cases(target)  # refuses an unknown target
    if target == "test":
        return split, SELECTION_TEXT["test"]
    return replace(split, valid=last_training_item_cases(split.train), _hash=[]), SELECTION_TEXT["valid"]
