"""A test ranking interrupted part-way goes on from its last committed request, and only when the first
committed batch ranks the same again (same weights, same scorer)."""

import os
from pathlib import Path

import numpy as np
import pytest
from tiny import rule_dataset

from bench.method import Method, RunContext
from bench.runs import eval_progress
from bench.runs.eval_progress import load_progress, progress_path, requests_fingerprint
from bench.runs.evaluate import evaluate
from bench.runs.run import run


class CountingMethod(Method):
    """Scores item (last + shift) highest; counts the requests it scored and can be told to stop after a
    number of score() calls, as a Ctrl-C in the middle of a long ranking."""

    name = "counting"
    interrupt_after: int | None = None

    def fit(self, dataset):
        self.n, self.scored, self.calls = dataset.num_items, 0, 0
        self.shift = int(self.config.get("shift", 1))
        after = os.environ.get("COUNTING_INTERRUPT_AFTER")  # run() builds its own instance
        self.interrupt_after = int(after) if after else None

    def score(self, users, histories):
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.scored += len(users)
        scores = np.zeros((len(users), self.n))
        for row, history in enumerate(histories):
            scores[row, (history[-1] + self.shift) % self.n] = 1.0
            scores[row, (history[-1] + 2) % self.n] = 0.5
        return scores


def fitted(shift: int = 1) -> tuple[CountingMethod, object]:
    dataset = rule_dataset(num_items=15, num_users=40, rule="next")
    method = CountingMethod({"shift": shift}, RunContext())
    method.fit(dataset)
    return method, dataset


def interrupted_progress(tmp_path: Path, cases, method, num_items: int, after_calls: int):
    """Rank `cases` in batches of 8 until `after_calls` score() calls, then Ctrl-C."""
    progress = load_progress(progress_path(tmp_path, "test"), requests_fingerprint(cases, {}, False))
    method.interrupt_after, method.calls = after_calls, 0
    with pytest.raises(KeyboardInterrupt):
        evaluate(method, cases, num_items, batch_size=8, progress=False, resume=progress, log=lambda _: None)
    method.interrupt_after = None
    return load_progress(progress_path(tmp_path, "test"), requests_fingerprint(cases, {}, False))


def test_interrupted_ranking_resumes_with_the_same_ranks(tmp_path: Path):
    method, dataset = fitted()
    cases = dataset.split.test
    whole = evaluate(method, cases, dataset.num_items, batch_size=8, progress=False)
    committed = interrupted_progress(tmp_path, cases, method, dataset.num_items, after_calls=3)
    assert committed.done == 24 and committed.calls == 1 and committed.seconds > 0
    method.scored, lines = 0, []
    resumed = evaluate(method, cases, dataset.num_items, batch_size=8, progress=False, resume=committed,
                       log=lines.append)
    assert np.array_equal(resumed.ranks, whole.ranks) and resumed.metrics == whole.metrics
    # The probe batch (8 requests) and the 16 not ranked before: nothing ranked twice beyond the probe.
    assert method.scored == 8 + len(cases) - 24
    assert resumed.calls == 2 and resumed.seconds >= committed.seconds
    assert "resuming after 24 of 40" in lines[0]


def test_other_weights_do_not_reuse_committed_ranks(tmp_path: Path):
    """The twin that can fail: the committed ranks came from a scorer that ranks differently now."""
    method, dataset = fitted(shift=1)
    cases = dataset.split.test
    committed = interrupted_progress(tmp_path, cases, method, dataset.num_items, after_calls=3)
    other, _ = fitted(shift=2)
    lines = []
    result = evaluate(other, cases, dataset.num_items, batch_size=8, progress=False, resume=committed,
                      log=lines.append)
    assert other.scored == 8 + len(cases) and "do not reproduce" in lines[0]
    fresh = evaluate(other, cases, dataset.num_items, batch_size=8, progress=False)
    assert np.array_equal(result.ranks, fresh.ranks) and result.calls == 1


def test_progress_names_its_requests_and_config(tmp_path: Path):
    method, dataset = fitted()
    cases = dataset.split.test
    interrupted_progress(tmp_path, cases, method, dataset.num_items, after_calls=2)
    path = progress_path(tmp_path, "test")
    assert load_progress(path, requests_fingerprint(cases, {}, False)).done == 16
    assert load_progress(path, requests_fingerprint(cases, {"bigrec": {"gamma": 0.5}}, False)).done == 0
    assert load_progress(path, requests_fingerprint(cases, {}, True)).done == 0
    assert load_progress(path, requests_fingerprint(cases.subset(list(range(30))), {}, False)).done == 0
    path.write_bytes(b"not an npz")
    assert load_progress(path, requests_fingerprint(cases, {}, False)).done == 0


def test_run_interrupted_while_ranking_resumes_and_clears(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    """End to end: `bench run` killed during the test ranking keeps its ranks in the work dir; the rerun
    ranks the rest, records both calls and removes the progress file."""
    import methods
    from bench.config import load_config

    monkeypatch.setitem(methods.METHODS, "counting", "tests.test_eval_progress:CountingMethod")
    monkeypatch.setattr(eval_progress, "SAVE_EVERY_SECONDS", 0.0)
    config = load_config()
    config["counting"] = {"eval_batch_size": 4}
    monkeypatch.setenv("COUNTING_INTERRUPT_AFTER", "2")
    with pytest.raises(KeyboardInterrupt):
        run("counting", "tiny", config=config, progress=False)
    saved = list((isolated / "cache").rglob("evaluate-test.npz"))
    assert len(saved) == 1 and not list((isolated / "results").rglob("*.json"))
    monkeypatch.delenv("COUNTING_INTERRUPT_AFTER")
    outcome = run("counting", "tiny", config=config, progress=False, log=lambda _: None)
    assert outcome.record["eval_calls"] == 2 and not saved[0].exists()
    again = run("counting", "tiny", config=config, progress=False, force=True, log=lambda _: None)
    assert again.record["eval_calls"] == 1 and again.record["metrics"] == outcome.record["metrics"]
