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
        CLOCK[0] += 1.0  # one fake second per batch, the interrupted one included
        # What describe() would report, kept by the evaluator; counted as work starts, as CoVE's chunks are,
        # so the interrupted batch has counted too.
        self.scoring_counts["requests"] += len(users)
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.scored += len(users)
        scores = np.zeros((len(users), self.n))
        for row, history in enumerate(histories):
            scores[row, (history[-1] + self.shift) % self.n] = 1.0
            scores[row, (history[-1] + 2) % self.n] = 0.5
        return scores


CLOCK = [0.0]


@pytest.fixture(autouse=True)
def fake_clock(monkeypatch: pytest.MonkeyPatch):
    """The evaluator's stopwatch reads a clock that only score() advances, so seconds are exact."""
    import types

    from bench.train import resources

    monkeypatch.setattr(resources, "time", types.SimpleNamespace(perf_counter=lambda: CLOCK[0]))


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
    # Three batches ranked in three fake seconds; the second the fourth took before Ctrl-C is not theirs.
    assert committed.done == 24 and committed.calls == 1 and committed.seconds == 3.0
    method.scored, lines = 0, []
    resumed = evaluate(method, cases, dataset.num_items, batch_size=8, progress=False, resume=committed,
                       log=lines.append)
    assert np.array_equal(resumed.ranks, whole.ranks) and resumed.metrics == whole.metrics
    # The probe batch (8 requests) and the 16 not ranked before: nothing ranked twice beyond the probe.
    assert method.scored == 8 + len(cases) - 24
    # Five batches in all, five seconds: the probe batch is not timed and the interrupted one counted once.
    assert resumed.calls == 2 and resumed.seconds == 5.0 and resumed.samples_per_sec == len(cases) / 5.0
    assert [sorted(call) for call in resumed.calls_detail] == [["git_rev", "threads"]] * 2
    assert "resuming after 24 of 40" in lines[0]


def test_a_resumed_ranking_counts_each_request_once(tmp_path: Path):
    """A method's scoring counts (BIGRec's decoded tokens, LC-Rec's prompt tokens) cover every request of a
    ranking that took several calls: the earlier calls' counts come from the progress file, neither the
    batch a Ctrl-C cut short nor the re-ranked probe batch is counted twice, and what the method counted
    before the ranking is kept."""
    method, dataset = fitted()
    cases = dataset.split.test
    committed = interrupted_progress(tmp_path, cases, method, dataset.num_items, after_calls=3)
    assert committed.counts == {"requests": 24}
    method.scoring_counts.clear()
    method.scoring_counts["before"] = 7
    evaluate(method, cases, dataset.num_items, batch_size=8, progress=False, resume=committed, log=lambda _: None)
    assert method.scoring_counts == {"requests": len(cases), "before": 7}
    # A progress file from before counts were kept: the record's counts say only what this call saw.
    committed = interrupted_progress(tmp_path / "old", cases, method, dataset.num_items, after_calls=3)
    committed.counts = None
    committed.save()
    old = load_progress(committed.path, committed.fingerprint)
    method.scoring_counts.clear()
    lines = []
    evaluate(method, cases, dataset.num_items, batch_size=8, progress=False, resume=old, log=lines.append)
    assert method.scoring_counts == {"requests": len(cases) - 24}
    assert any("counts were not saved" in line for line in lines)


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
    for damaged in (b"not an npz", b"", path.read_bytes()[:100]):
        path.write_bytes(damaged)
        assert load_progress(path, requests_fingerprint(cases, {}, False)).done == 0


def test_fingerprint_follows_the_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Weights retrained in the work dir (other files, or the same names rewritten) and other package versions
    are other rankings; the state file, locks and the progress files themselves are not."""
    _, dataset = fitted()
    cases = dataset.split.test
    (tmp_path / "best-e0002.pt").write_bytes(b"weights")
    before = requests_fingerprint(cases, {}, False, tmp_path)
    (tmp_path / "progress.json").write_text("{}")
    (tmp_path / "evaluate-test.npz").write_bytes(b"x")
    assert requests_fingerprint(cases, {}, False, tmp_path) == before
    (tmp_path / "best-e0003.pt").write_bytes(b"weights")
    assert requests_fingerprint(cases, {}, False, tmp_path) != before
    (tmp_path / "best-e0003.pt").unlink()
    os.utime(tmp_path / "best-e0002.pt", ns=(1, 1))
    assert requests_fingerprint(cases, {}, False, tmp_path) != before
    these_versions = requests_fingerprint(cases, {}, False)
    monkeypatch.setattr(eval_progress, "package_versions", lambda: {"torch": "0.0"})
    assert requests_fingerprint(cases, {}, False) != these_versions


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


def test_a_trained_method_resumes_its_ranking(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    """With checkpoints in the work dir (SASRec's training loop): the restart reloads the finished training
    without rewriting a file, so the committed ranks are reused, and the record equals a fresh one's."""
    from bench.config import load_config
    from bench.runs import evaluate as evaluate_module

    monkeypatch.setattr(eval_progress, "SAVE_EVERY_SECONDS", 0.0)
    config = load_config()
    overrides = ["sasrec_native.epochs=2", "sasrec_native.eval_batch_size=8", "sasrec_native.hidden_size=16"]
    original, batches = evaluate_module.rank_batch, []
    original_evaluate = evaluate_module.evaluate

    def interrupted(*args, **kwargs):
        if batches:  # inside the test ranking (validation ranks too, unpatched)
            batches.append(1)
            if len(batches) == 4:  # after 2 batches
                raise KeyboardInterrupt
        return original(*args, **kwargs)

    def test_ranking(*args, **kwargs):
        if kwargs.get("resume") is not None:
            batches.append(0)
        return original_evaluate(*args, **kwargs)

    def run_quietly(**extra):
        return run("sasrec_native", "tiny", config=config, overrides=overrides, progress=False, log=lambda _: None,
                   **extra)

    monkeypatch.setattr(evaluate_module, "rank_batch", interrupted)
    monkeypatch.setattr(evaluate_module, "evaluate", test_ranking)
    with pytest.raises(KeyboardInterrupt):
        run_quietly()
    assert load_progress(*_only_progress(isolated)).done == 16
    monkeypatch.setattr(evaluate_module, "rank_batch", original)
    monkeypatch.setattr(evaluate_module, "evaluate", original_evaluate)
    resumed = run_quietly()
    assert resumed.record["eval_calls"] == 2
    fresh = run_quietly(force=True)
    assert fresh.record["eval_calls"] == 1 and fresh.record["metrics"] == resumed.record["metrics"]


def _only_progress(isolated: Path) -> tuple[Path, str]:
    """The one progress file under the cache, with the fingerprint it was saved under."""
    import json

    (path,) = list((isolated / "cache").rglob("evaluate-test.npz"))
    with np.load(path) as stored:
        return path, json.loads(str(stored["meta"]))["fingerprint"]
