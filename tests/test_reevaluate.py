"""`bench evaluate`: a recorded run's own weights scored under other evaluation options, nothing retrained,
the source untouched, and every change that would need a training refused in one line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.report.labels import method_label, training_text
from bench.store.request_ranks import load_ranks

REPO = Path(__file__).resolve().parent.parent


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=REPO, capture_output=True, text=True)


def folder_digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def trained_record(isolated: Path) -> Path:
    done = bench("run", "--method", "sasrec_native", "--dataset", "tiny", "--threads", "1",
                 "--set", "sasrec_native.epochs=3")
    assert done.returncode == 0, done.stderr
    return next((isolated / "results" / "runs" / "tiny").glob("sasrec_native-*.json"))


def test_masked_evaluation_reuses_the_weights_and_only_lifts_targets(isolated: Path):
    source = trained_record(isolated)
    source_bytes = source.read_bytes()
    source_record = json.loads(source_bytes)
    work = isolated / "cache" / "work" / "tiny" / f"sasrec_native-{source_record['config_hash']}"
    weights_before = folder_digest(work)

    done = bench("evaluate", str(source), "--set", "eval.mask_history=true", "--set", 'eval.extra_targets=["valid"]',
                 "--threads", "1", "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    path, record = Path(document["path"]), document["record"]
    assert path != source and record["mask_history"] is True and record["config"]["eval"]["mask_history"] is True
    assert record["weights_from"]["config_hash"] == source_record["config_hash"]
    assert record["method_info"]["best_epoch"] == source_record["method_info"]["best_epoch"]
    assert record["train_seconds"] == source_record["train_seconds"]  # the source's training, not a new one
    chosen_on = source_record["num_valid_requests"]
    assert record["metrics_by_position"]["valid"]["note"] == (f"same trained model; {chosen_on} seeded requests of "
                                                              "this position also chose the epoch (optimistic)")
    # Masking the user's other items removes competitors only: no target ranks lower, and on this data the
    # history holds items the model ranks above some targets, so some rise (not the same scoring twice).
    unmasked = load_ranks(source, source_record)["test"]
    masked = load_ranks(path, record)["test"]
    assert np.array_equal(unmasked[0], masked[0])
    assert np.all(masked[1] <= unmasked[1]) and np.any(masked[1] < unmasked[1])
    assert record["metrics"]["hr@5"] >= source_record["metrics"]["hr@5"]
    # The source run is untouched: its record and its checkpoints.
    assert source.read_bytes() == source_bytes and folder_digest(work) == weights_before
    # The row says whose weights these are, and the same request again is reused, not recomputed.
    assert method_label(record, {}).endswith(f"weights={source_record['config_hash']}]")
    assert f"run {source_record['config_hash']}'s training" in training_text(record)
    again = bench("evaluate", str(source), "--set", "eval.mask_history=true", "--set", 'eval.extra_targets=["valid"]',
                  "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["status"] == "reused"


def test_changes_that_need_training_are_refused_before_any_compute(isolated: Path):
    source = trained_record(isolated)
    runs = source.parent
    before = sorted(runs.iterdir())
    cases = {
        ("--set", "sasrec_native.epochs=5"): "changes only eval.mask_history",
        ("--set", "eval.target=valid"): "changes training or the epoch chosen",
        ("--set", "eval.max_valid_users=10"): "changes only",
        ("--set", "eval.mask_history=false"): "changes nothing",
        ("--set", "eval.mask_history=maybe"): "eval.mask_history",
        (): "give the evaluation options to change",
    }
    for args, expected in cases.items():
        refused = bench("evaluate", str(source), *args)
        assert refused.returncode == 2 and expected in refused.stderr, (args, refused.stderr)
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    missing = bench("evaluate", str(runs / "nothing.json"), "--set", "eval.mask_history=true")
    assert missing.returncode == 2 and "no such record file" in missing.stderr
    assert sorted(runs.iterdir()) == before
    # A re-evaluation is not evaluated again (its weights are another run's); gone weights are named.
    done = bench("evaluate", str(source), "--set", "eval.mask_history=true", "--json")
    assert done.returncode == 0, done.stderr
    again = bench("evaluate", json.loads(done.stdout)["path"], "--set", 'eval.extra_targets=["valid"]')
    assert again.returncode == 2 and "evaluate that record instead" in again.stderr
    record = json.loads(source.read_text())
    work = isolated / "cache" / "work" / "tiny" / f"sasrec_native-{record['config_hash']}"
    for file in work.iterdir():
        file.unlink()
    work.rmdir()
    gone = bench("evaluate", str(source), "--set", 'eval.extra_targets=["valid"]')
    assert gone.returncode == 2 and "are gone from this machine" in gone.stderr


def test_a_methods_evaluation_keys_may_change_and_others_may_not():
    import pytest

    from bench.errors import BenchError
    from bench.runs.reevaluate import evaluation_changes

    record = {"method": "bigrec", "config": {"eval": {"mask_history": False}, "bigrec": {"gamma": 0.0, "epochs": 50}}}
    changed = evaluation_changes(record, ["bigrec.gamma=auto"], "r.json", ("gamma", "side_score"))
    assert changed["bigrec"] == {"gamma": "auto", "epochs": 50} and changed["eval"] == record["config"]["eval"]
    assert record["config"]["bigrec"]["gamma"] == 0.0  # the source record is not touched
    for assignment, message in (("bigrec.epochs=3", "changes only eval.mask_history"),
                                ("bigrec.gamma=0.0", "changes nothing"),
                                ("cove.gamma=1", "changes only")):
        with pytest.raises(BenchError, match=message):
            evaluation_changes(record, [assignment], "r.json", ("gamma", "side_score"))
    keys, shortcuts = ("gamma", "side_score", "reuse_generations"), ("reuse_generations",)
    with pytest.raises(BenchError, match="changes nothing .*reuse_generations only skips work"):
        evaluation_changes(record, ["bigrec.reuse_generations=true"], "r.json", keys, shortcuts)
    both = evaluation_changes(record, ["bigrec.reuse_generations=true", "bigrec.gamma=auto"], "r.json", keys, shortcuts)
    assert both["bigrec"]["reuse_generations"] is True and both["bigrec"]["gamma"] == "auto"
    with pytest.raises(BenchError, match="bigrec.gamma"):  # not this method's evaluation key
        evaluation_changes({**record, "method": "sasrec_native"}, ["bigrec.gamma=auto"], "r.json")


def test_cove_scoring_switches_are_evaluation_keys():
    """CoVE's compiled scoring and its scoring batches can be re-scored on a record's weights; its training
    keys cannot (they would need a training)."""
    import pytest

    from bench.errors import BenchError
    from bench.runs.reevaluate import evaluation_changes
    from methods.cove.method import CoVEMethod
    from methods.cove.settings import SCORING_ONLY_KEYS

    assert set(CoVEMethod.evaluation_keys) <= set(SCORING_ONLY_KEYS)
    record = {"method": "cove", "config": {"eval": {"mask_history": False}, "cove": {"compile_scoring": False}}}
    changed = evaluation_changes(record, ["cove.compile_scoring=true"], "r.json", CoVEMethod.evaluation_keys)
    assert changed["cove"]["compile_scoring"] is True
    with pytest.raises(BenchError, match="bench evaluate changes only"):
        evaluation_changes(record, ["cove.learning_rate=0.1"], "r.json", CoVEMethod.evaluation_keys)
