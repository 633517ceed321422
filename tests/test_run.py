"""Runs are all-or-nothing: an interrupted run leaves no partial result file."""

from pathlib import Path

import numpy as np
import pytest

from bench.data.synthetic import rule_dataset
from bench.evaluate import evaluate
from bench.method import Method, RunContext
from bench.run import run


class ExplodingMethod(Method):
    name = "exploding"

    def fit(self, dataset):
        self.n = dataset.num_items

    def score(self, users, histories):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C during evaluation


def test_interrupted_run_leaves_no_record(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    import methods

    monkeypatch.setitem(methods.METHODS, "exploding", "tests.test_run:ExplodingMethod")
    from bench.config import load_config

    config = load_config()
    config["exploding"] = {}
    with pytest.raises(KeyboardInterrupt):
        run("exploding", "tiny", config=config, progress=False)
    results = isolated / "results"
    assert not list(results.rglob("*.json")) and not list(results.rglob("*.tmp"))


class OracleMethod(Method):
    """Scores the true next item highest: the evaluator must report perfect metrics."""

    name = "oracle"

    def fit(self, dataset):
        self.n = dataset.num_items

    def score(self, users, histories):
        scores = np.zeros((len(users), self.n))
        for row, history in enumerate(histories):
            scores[row, (history[-1] + 1) % self.n] = 1.0
        return scores


def test_evaluator_full_ranking_and_masking():
    dataset = rule_dataset(num_items=15, num_users=30, rule="next")
    oracle = OracleMethod({}, RunContext())
    oracle.fit(dataset)
    result = evaluate(oracle, dataset.split.test, dataset.num_items, progress=False)
    assert result.metrics["hr@5"] == 1.0 and result.metrics["ndcg@5"] == 1.0
    assert result.samples_per_sec > 0
    with pytest.raises(ValueError, match="one score per item"):
        bad = OracleMethod({}, RunContext())
        bad.n = dataset.num_items - 1
        evaluate(bad, dataset.split.test, dataset.num_items, progress=False)


class HistoryLover(Method):
    """Scores the last history item highest and the true next item second."""

    name = "history"

    def fit(self, dataset):
        self.n = dataset.num_items

    def score(self, users, histories):
        scores = np.zeros((len(users), self.n))
        for row, history in enumerate(histories):
            scores[row, (history[-1] + 1) % self.n] = 1.0
            scores[row, history[-1]] = 2.0
        return scores


def test_history_masking_is_an_explicit_option():
    dataset = rule_dataset(num_items=15, num_users=30, rule="next")
    method = HistoryLover({}, RunContext())
    method.fit(dataset)
    plain = evaluate(method, dataset.split.test, dataset.num_items, ks=(1,), progress=False)
    masked = evaluate(method, dataset.split.test, dataset.num_items, ks=(1,), mask_history=True, progress=False)
    assert plain.metrics["hr@1"] == 0.0 and masked.metrics["hr@1"] == 1.0


def test_git_revision_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    """The GPU machine runs a copy without .git; scripts/gpu_run.sh passes the revision along."""
    from bench.results import git_revision

    assert git_revision() != "abc123 (copy)"
    monkeypatch.setenv("BENCH_GIT_REV", "abc123 (copy)")
    assert git_revision() == "abc123 (copy)"
