"""Runs are all-or-nothing: an interrupted run leaves no partial result file."""

import json
from pathlib import Path

import numpy as np
import pytest
from tiny import rule_dataset

from bench.method import Method, RunContext
from bench.runs.evaluate import evaluate
from bench.runs.run import run


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


def test_evaluator_full_ranking_and_shape_check():
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
    import subprocess

    from bench.store.results import git_revision

    monkeypatch.delenv("BENCH_GIT_REV", raising=False)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, check=True).stdout.strip()
    assert git_revision() in (head, f"{head}+dirty")  # the checkout's own commit
    monkeypatch.setenv("BENCH_GIT_REV", "abc123 (copy)")
    assert git_revision() == "abc123 (copy)"


def test_masking_never_hides_a_target_that_is_also_in_the_history():
    """Request 0 bought item 5 before and buys it again: masking must push item 3 down, never item 5."""
    from bench.data.types import EvalCases

    class Fixed(Method):
        name = "fixed"

        def fit(self, dataset):
            pass

        def score(self, users, histories):
            scores = np.zeros((len(users), 8))
            scores[0, [3, 5, 1]] = [3.0, 2.0, 1.0]  # target 5 ranked second behind history item 3
            scores[1, [7, 4]] = [2.0, 1.0]  # target 4 ranked second behind history item 7
            return scores

    cases = EvalCases([0, 1], [[3, 5], [2, 7]], [5, 4])
    plain = evaluate(Fixed({}, RunContext()), cases, 8, ks=(1,), progress=False)
    masked = evaluate(Fixed({}, RunContext()), cases, 8, ks=(1,), mask_history=True, progress=False)
    assert plain.metrics["hr@1"] == 0.0 and masked.metrics["hr@1"] == 1.0


class SelectionSpy(Method):
    """Writes down the requests the harness lets it select on (loaded by the registry as another module
    instance, so it reports through a file named in its config)."""

    name = "spy"

    def fit(self, dataset):
        import json

        self.n = dataset.num_items
        valid = dataset.split.valid
        Path(self.config["out"]).write_text(json.dumps([valid.histories, valid.targets]))
        self.context.validate(self)

    def score(self, users, histories):
        return np.zeros((len(users), self.n))


@pytest.mark.parametrize("target", ["test", "valid"])
def test_selection_never_uses_the_reported_requests(target: str, isolated: Path, monkeypatch: pytest.MonkeyPatch):
    import methods
    from bench.config import load_config
    from bench.data.prepare import prepare
    from bench.runs.setup import run_paths

    monkeypatch.setitem(methods.METHODS, "spy", "tests.test_run:SelectionSpy")
    config = load_config()
    config["spy"] = {"out": str(isolated / "selection.json")}
    record = run("spy", "tiny", config=config, overrides=[f"eval.target={target}"], progress=False).record
    paths = run_paths(config)
    split = prepare("tiny", paths.data_dir, paths.cache_dir)[0].split
    histories, targets = json.loads((isolated / "selection.json").read_text())
    chosen = list(zip(map(tuple, histories), targets))
    reported = set(zip(map(tuple, split.valid.histories), split.valid.targets))
    if target == "test":
        assert set(chosen) == reported and "second-to-last" in record["selection"]["requests"]
        return
    assert chosen and not reported & set(chosen)
    # leave-one-out: the third-to-last item from the items before it (the training split's last item)
    assert chosen == [(tuple(seq[:-1]), seq[-1]) for seq in split.train if len(seq) >= 2]
    assert "third-to-last" in record["selection"]["requests"] and record["num_valid_requests"] == len(chosen)


class WorkDirSpy(Method):
    """Notes whether its work dir already held a checkpoint when fit() started, then leaves one."""

    name = "workspy"

    def fit(self, dataset):
        self.n = dataset.num_items
        marker = Path(self.context.work_dir) / "checkpoint"
        with open(self.config["out"], "a") as log:
            log.write("resumed\n" if marker.exists() else "fresh\n")
        marker.write_text("trained")

    def score(self, users, histories):
        return np.zeros((len(users), self.n))


def spy_config(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    import methods
    from bench.config import load_config

    monkeypatch.setitem(methods.METHODS, "workspy", "tests.test_run:WorkDirSpy")
    config = load_config()
    config["workspy"] = {"out": str(isolated / "fits.log")}
    return config


def test_force_trains_from_scratch(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    config = spy_config(isolated, monkeypatch)
    run("workspy", "tiny", config=config, progress=False)
    assert run("workspy", "tiny", config=config, progress=False).reused
    run("workspy", "tiny", config=config, progress=False, force=True)
    assert (isolated / "fits.log").read_text().split() == ["fresh", "fresh"]


def test_an_identical_run_in_progress_is_refused(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    from bench.errors import BenchError
    from bench.train.locks import work_dir_lock

    config = spy_config(isolated, monkeypatch)
    path = run("workspy", "tiny", config=config, dry_run=True).path
    work_dir = isolated / "cache" / "work" / "tiny" / path.stem
    with work_dir_lock(work_dir), pytest.raises(BenchError, match="already training"):
        run("workspy", "tiny", config=config, progress=False)
    assert not (isolated / "fits.log").exists()
    run("workspy", "tiny", config=config, progress=False)  # the lock is gone with its holder


def test_unwritable_results_dir_fails_before_any_work(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    from bench.errors import BenchError

    config = spy_config(isolated, monkeypatch)
    blocker = isolated / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(BenchError, match="cannot write there"):
        run("workspy", "tiny", config=config, results_dir=blocker / "results", progress=False)
    assert not (isolated / "fits.log").exists()


def test_a_late_write_failure_keeps_the_record_elsewhere(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    import bench.store.results
    from bench.errors import BenchError

    config = spy_config(isolated, monkeypatch)
    real = bench.store.results.write_record

    def disk_full(path, record):
        if "unsaved-records" not in str(path):
            raise OSError(28, "No space left on device")
        real(path, record)

    monkeypatch.setattr(bench.store.results, "write_record", disk_full)
    with pytest.raises(BenchError, match="it was kept at .*unsaved-records"):
        run("workspy", "tiny", config=config, progress=False)
    [kept] = (isolated / "cache" / "unsaved-records").rglob("*.json")
    assert json.loads(kept.read_text())["method"] == "workspy"


def test_a_corrupt_record_is_moved_aside_and_the_run_repeated(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    config = spy_config(isolated, monkeypatch)
    path = run("workspy", "tiny", config=config, progress=False).path
    path.write_text("{half a rec")
    warnings: list[str] = []
    outcome = run("workspy", "tiny", config=config, progress=False, log=warnings.append)
    assert not outcome.reused and json.loads(path.read_text())["method"] == "workspy"
    assert path.with_name(path.name + ".corrupt").read_text() == "{half a rec"
    assert any("not valid JSON" in line for line in warnings)


def test_another_model_at_the_same_path_is_a_new_run(isolated: Path):
    """The config hash covers the backbone's content: replacing the folder never reuses the old record or
    resumes its checkpoint, whether the new model has the same shape or another."""
    import shutil

    import torch
    from tiny import tiny_backbone

    folder = isolated / "lm"
    overrides = ["cove.epochs=1", "cove.max_train_users=8", "cove.use_titles=false", "eval.max_eval_users=4"]

    def save(seed: int, hidden: int) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        model, tokenizer = tiny_backbone(["Here is a list of items ,"], seed=seed, hidden=hidden)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    torch.set_num_threads(1)
    save(seed=0, hidden=16)
    first = run("cove", "tiny", overrides=overrides, model=str(folder), progress=False)
    assert run("cove", "tiny", overrides=overrides, model=str(folder), progress=False).reused
    save(seed=1, hidden=16)  # same shape, other weights
    second = run("cove", "tiny", overrides=overrides, model=str(folder), progress=False)
    save(seed=1, hidden=32)  # another shape: must train afresh, not crash on the old checkpoint
    third = run("cove", "tiny", overrides=overrides, model=str(folder), progress=False)
    assert not second.reused and not third.reused
    assert len({first.path, second.path, third.path}) == 3
    identities = [o.record["model_identity"] for o in (first, second, third)]
    assert identities[0] != identities[1] != identities[2]
    assert third.record["method_info"]["resumed_after_epoch"] is None


def test_a_checkpoint_that_does_not_fit_is_one_line(tmp_path: Path):
    import torch
    from safetensors.torch import save_file

    from bench.errors import BenchError
    from methods.cove.item_layers import ItemHead
    from methods.cove.trainer import load_checkpoint

    class Tables(torch.nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.item_head = ItemHead(10, dim)

        def trainable_state(self):
            return {"item_head.weight": self.item_head.weight}

        def load_trainable_state(self, state):
            self.item_head.weight.data.copy_(state["item_head.weight"])

    save_file({"item_head.weight": torch.zeros(10, 8)}, tmp_path / "last.safetensors")
    with pytest.raises(BenchError, match="does not fit the model being trained.*--force"):
        load_checkpoint(Tables(16), tmp_path / "last.safetensors")


def test_a_second_training_waits_for_the_first(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    """One training per cache folder: a run started while another holds the slot waits (and says for
    whom), then records; --parallel (parallel=True) runs at once and is recorded as not exclusive."""
    import fcntl
    import threading

    config = spy_config(isolated, monkeypatch)
    lock_path = isolated / "cache" / "training.lock"
    lock_path.parent.mkdir(parents=True)
    holder = open(lock_path, "a+")
    holder.write("pid 1: bench run --method cove --dataset beauty")
    holder.flush()
    fcntl.flock(holder, fcntl.LOCK_EX)
    messages: list[str] = []
    outcome: list = []
    waiter = threading.Thread(target=lambda: outcome.append(run("workspy", "tiny", config=config, progress=False,
                                                                log=messages.append)))
    waiter.start()
    waiter.join(timeout=3)
    assert waiter.is_alive() and not (isolated / "fits.log").exists()
    assert any("waiting for pid 1: bench run --method cove" in m for m in messages)
    fcntl.flock(holder, fcntl.LOCK_UN)
    holder.close()
    waiter.join(timeout=60)
    assert outcome and outcome[0].record["exclusive"] is True
    config["workspy"]["other"] = 1  # another config: a new run
    with open(lock_path, "a+") as again:
        fcntl.flock(again, fcntl.LOCK_EX)  # held again: a parallel run does not wait for it
        beside = run("workspy", "tiny", config=config, progress=False, parallel=True)
    assert beside.record["exclusive"] is False


def test_per_request_ranks_reproduce_the_recorded_metrics(isolated: Path):
    """The stored (request index, rank) pairs are recomputed here without the harness: pop's rank of each
    request's target from the training counts by hand, the metrics by the hand formula."""
    import math
    from collections import Counter

    from bench.config import load_config
    from bench.data.prepare import prepare
    from bench.errors import BenchError
    from bench.runs.setup import run_paths
    from bench.store.request_ranks import load_ranks

    outcome = run("pop", "tiny", overrides=['eval.extra_targets=["valid"]', "eval.max_eval_users=30"],
                  progress=False)
    record = outcome.record
    assert record["ranks"]["positions"] == {"test": 30, "valid": 30}
    stored = load_ranks(outcome.path, record)
    paths = run_paths(load_config())
    split = prepare("tiny", paths.data_dir, paths.cache_dir)[0].split
    counts = Counter(item for seq in split.train for item in seq)
    num_items = record["dataset_info"]["items"]
    recorded = {"test": record["metrics"], "valid": record["metrics_by_position"]["valid"]["metrics"]}
    for position, metrics in recorded.items():
        indices, ranks = stored[position]
        assert len(set(indices.tolist())) == 30 and indices.max() < record["subsample"]["eval_requests_total"]
        targets = [split.cases(position).targets[i] for i in indices]
        by_hand = [sum(counts[item] >= counts[target] for item in range(num_items)) - 1 for target in targets]
        assert ranks.tolist() == by_hand
        for k in (5, 10, 20):
            assert metrics[f"hr@{k}"] == pytest.approx(sum(rank < k for rank in by_hand) / 30, abs=1e-12)
            assert metrics[f"ndcg@{k}"] == pytest.approx(
                sum(1 / math.log2(rank + 2) for rank in by_hand if rank < k) / 30, abs=1e-12)
    ranks_file = outcome.path.with_name(record["ranks"]["file"])
    ranks_file.write_bytes(ranks_file.read_bytes() + b"x")
    with pytest.raises(BenchError, match="sha256 differs"):
        load_ranks(outcome.path, record)


HALF_WAY = """
import json, resource, signal, sys
from pathlib import Path

import numpy as np

from bench.store.request_ranks import save_ranks
from bench.store.results import write_record

kind, path, limit = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG) instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    if kind == "record":
        write_record(path, json.loads(sys.stdin.read()))
    else:
        ranks = np.random.default_rng(0).integers(0, 10**6, 50_000)
        save_ranks(path, {"test": (np.arange(len(ranks)), ranks)})
except OSError as error:
    print("failed half-way:", error.strerror)
"""


@pytest.mark.parametrize("kind", ["record", "ranks"])
def test_a_write_that_fails_half_way_keeps_the_old_file(kind: str, tmp_path: Path):
    """Records and their ranks are written to a temp file and renamed: a write that dies half-way (here past a
    file-size limit, as on a full disk) leaves the previous file byte for byte and no partial file beside it."""
    import subprocess
    import sys

    from bench.store.request_ranks import ranks_path, save_ranks
    from bench.store.results import REQUIRED_KEYS, write_record

    path = tmp_path / "runs" / "tiny" / "pop-0123456789ab.json"
    record = {key: "old" for key in REQUIRED_KEYS}
    write_record(path, record)
    save_ranks(path, {"test": (np.arange(3), np.arange(3))})
    target = path if kind == "record" else ranks_path(path)
    before = target.read_bytes()
    new = {**record, "method_info": {"padding": "x" * 20_000}}  # far past the limit: the write stops inside
    result = subprocess.run([sys.executable, "-c", HALF_WAY, kind, str(path), "4096"], input=json.dumps(new),
                            capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
    assert "failed half-way" in result.stdout, result.stderr
    assert target.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == sorted([path.name, ranks_path(path).name])


def test_every_run_with_the_same_max_eval_users_ranks_the_same_requests(isolated: Path):
    """The evaluation subsample is seeded once for all methods and seeds: whatever the run, the same requests."""
    from bench.store.request_ranks import load_ranks

    indices = []
    for seed in (0, 1):
        outcome = run("pop", "tiny", overrides=["eval.max_eval_users=10"], seed=seed, progress=False)
        indices.append(load_ranks(outcome.path, outcome.record)["test"][0].tolist())
    assert indices[0] == indices[1] and len(set(indices[0])) == 10 and indices[0] != list(range(10))


def test_a_resumed_run_records_its_training_time_over_every_call(isolated: Path):
    """`train_seconds` is the last call's stopwatch; `train_seconds_total` and `training_calls` cover the calls
    that trained the run (here: one interrupted after its first epoch, one that resumed)."""
    from bench.config import load_config

    config = load_config()
    overrides = ["sasrec_native.epochs=3", "sasrec_native.patience=0"]

    def stop_after_first_epoch(message: str) -> None:
        if "epoch 2 loss" in message:  # logged before epoch 2 is saved: resumes after epoch 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("sasrec_native", "tiny", overrides=overrides, config=config, progress=False, threads=1,
            log=stop_after_first_epoch)
    resumed = run("sasrec_native", "tiny", overrides=overrides, config=config, progress=False, threads=1,
                  log=lambda message: None).record
    assert resumed["method_info"]["resumed_after_epoch"] == 1 and resumed["training_calls"] == 2
    assert resumed["train_seconds_total"] > 0
    info = resumed["method_info"]
    assert resumed["train_seconds_total"] == info["train_seconds_all_calls"]  # the lifecycle's clock, all calls
    assert resumed["train_seconds_total"] == pytest.approx(  # = its per-epoch seconds (rounded) + validation
        info["seconds_per_epoch"] * info["epochs_run"] + info["validate_seconds"], abs=0.1)
    fresh = run("pop", "tiny", config=config, progress=False).record
    assert fresh["training_calls"] == 1 and fresh["train_seconds_total"] == fresh["train_seconds"]


def test_training_totals_come_from_what_the_method_reports():
    from bench.runs.run import training_totals

    cove = {"training": {"resumed_after_epoch": 0, "train_seconds_all_calls": 812.5}}
    assert training_totals(cove, 300.0) == {"train_seconds_total": 812.5, "training_calls": None}
    recbole_loaded = {"resumed_after_epoch": None, "loaded_finished_training": True}
    assert training_totals(recbole_loaded, 2.0) == {"train_seconds_total": None, "training_calls": None}
    assert training_totals({"training": {"resumed": False}}, 5.0) == {"train_seconds_total": 5.0,
                                                                      "training_calls": 1}


def test_finish_records_a_stopped_run_as_not_converged(isolated: Path):
    """`bench run --finish` on a run killed after its first epoch: no further epoch, the record says
    stopped_by finish_requested and the leaderboard keeps it out of the converged tables; asked while another
    process holds the run, the request is left for that process."""
    from bench.config import load_config
    from bench.errors import BenchError
    from bench.store.results import cut_short
    from bench.train.lifecycle import FinishHandedOver
    from bench.train.locks import work_dir_lock

    config = load_config()
    overrides = ["sasrec_native.epochs=5", "sasrec_native.patience=0"]
    with pytest.raises(BenchError, match="no committed training"):
        run("sasrec_native", "tiny", overrides=overrides, config=config, progress=False, finish=True)

    def stop_after_first_epoch(message: str) -> None:
        if "epoch 2 loss" in message:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run("sasrec_native", "tiny", overrides=overrides, config=config, progress=False, threads=1,
            log=stop_after_first_epoch)
    path = run("sasrec_native", "tiny", overrides=overrides, config=config, dry_run=True).path
    work_dir = isolated / "cache" / "work" / "tiny" / path.stem
    with work_dir_lock(work_dir), pytest.raises(FinishHandedOver, match="asked it to finish"):
        run("sasrec_native", "tiny", overrides=overrides, config=config, progress=False, finish=True)
    assert (work_dir / "finish.request").exists() and not path.exists()
    record = run("sasrec_native", "tiny", overrides=overrides, config=config, progress=False, threads=1,
                 log=lambda message: None).record  # the request stands: this run finishes
    info = record["method_info"]
    assert info["stopped_by"] == "finish_requested" and info["epochs_run"] == 1 and info["epochs_max"] == 5
    assert cut_short(record) and not (work_dir / "finish.request").exists()
