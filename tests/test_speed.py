"""`bench speed` with fake methods: same requests for all, warm-up excluded, record written atomically."""

from __future__ import annotations

import importlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.config import load_config
from bench.errors import BenchError
from bench.method import Method
from bench.runs.speed import QUICK_FIT_USERS, measure_speed, speed_path
from bench.runs.speed_options import QUICK_FIT, route_overrides, route_presets

# What the fakes saw. The registry imports this file as "tests.test_speed", which may be another
# module object than the one pytest runs, so tests read these through `seen()`.
CALLS: dict[str, list[list[int]]] = {}
CONFIGS: dict[str, dict[str, Any]] = {}
FITTED_USERS: dict[str, int] = {}


def seen() -> Any:
    return importlib.import_module("tests.test_speed")


class FakeCoVE(Method):
    name = "cove"

    def fit(self, dataset):
        CONFIGS[self.name] = dict(self.config)
        FITTED_USERS[self.name] = sum(1 for seq in dataset.split.train if seq)
        CALLS[self.name] = []
        self.n = dataset.num_items

    def score(self, users, histories):
        CALLS[self.name].append(list(users))
        return np.zeros((len(users), self.n))

    def describe(self):
        return {"backbone": "fake-135M", **precision_of(self.config)}


def precision_of(config: dict[str, Any]) -> dict[str, Any]:
    """A backbone method reports the precision it ran in (here: its setting, as a CPU with bf16 resolves it)."""
    return {"precision": config["precision"]} if "precision" in config else {}


class FakeBIGRec(FakeCoVE):
    name = "bigrec"

    def describe(self):
        return {"backbone": "fake-135M", "generated_tokens_per_sample": 12.5, **precision_of(self.config)}


@pytest.fixture
def fakes(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import methods

    monkeypatch.setitem(methods.METHODS, "cove", "tests.test_speed:FakeCoVE")
    monkeypatch.setitem(methods.METHODS, "bigrec", "tests.test_speed:FakeBIGRec")
    config = load_config()
    config["cove"] = {"epochs": 14, "compression_ratio": 2}
    config["bigrec"] = {"max_new_tokens": 64}
    seen().CALLS.clear()
    seen().CONFIGS.clear()
    return config


def test_same_requests_warmup_excluded_and_record(fakes: dict[str, Any], isolated: Path):
    outcome = measure_speed("tiny", ["cove", "bigrec"], num_prompts=5, repeats=3, batch_size=2, config=fakes,
                            log=lambda _: None)
    record = outcome.record
    assert outcome.path == speed_path(isolated / "results", "tiny", "cpu", 2)
    assert outcome.path == isolated / "results" / "speed" / "tiny-cpu-b2.json"  # batch 1 keeps tiny-cpu.json
    assert json.loads(outcome.path.read_text()) == json.loads(json.dumps(record, default=str))
    assert not list(outcome.path.parent.glob("*.tmp"))
    assert not list((isolated / "cache" / "work").glob("speed-*"))  # fits ran in temporary work dirs

    # One warm-up batch, then 3 passes of ceil(5/2) batches; every pass sees the same 5 users.
    for name in ("cove", "bigrec"):
        calls = seen().CALLS[name]
        assert len(calls) == 1 + 3 * math.ceil(5 / 2)
        timed = calls[1:]
        passes = [sum(timed[i * 3:(i + 1) * 3], []) for i in range(3)]
        assert passes[0] == passes[1] == passes[2] and len(passes[0]) == 5
    assert sum(seen().CALLS["cove"][1:4], []) == sum(seen().CALLS["bigrec"][1:4], [])

    for key in ("device", "backbone", "methods", "speed_ratios", "config", "versions", "git_rev",
                "created", "weights", "hardware", "split_hash"):
        assert key in record
    assert record["device"] == "cpu" and record["backbone"] == "fake-135M" and record["num_prompts"] == 5
    cove, bigrec = record["methods"]["cove"], record["methods"]["bigrec"]
    for entry in (cove, bigrec):
        speed = entry["samples_per_sec"]
        assert len(speed["runs"]) == 3 and speed["min"] <= speed["median"] <= speed["max"]
        assert entry["peak_memory_mb"] > 0
    assert bigrec["generated_tokens_per_sample"] == 12.5 and cove["generated_tokens_per_sample"] is None
    assert bigrec["generated_tokens_per_sec"] == pytest.approx(12.5 * bigrec["samples_per_sec"]["median"], rel=1e-3)
    assert record["speed_ratios"]["of"] == "cove" and record["speed_ratios"]["over"]["bigrec"] == pytest.approx(
        cove["samples_per_sec"]["median"] / bigrec["samples_per_sec"]["median"])


def test_quick_fit_only_touches_existing_keys_and_set_wins(fakes: dict[str, Any]):
    configs, fitted = seen().CONFIGS, seen().FITTED_USERS
    outcome = measure_speed("tiny", ["cove", "bigrec"], num_prompts=3, repeats=1, config=fakes,
                            overrides=["bigrec.max_new_tokens=8"], log=lambda _: None)
    assert configs["cove"]["epochs"] == QUICK_FIT["epochs"] and configs["bigrec"] == {"max_new_tokens": 8}
    assert "cove.epochs=1" in outcome.record["weights"] and "bigrec: its own settings" in outcome.record["weights"]
    measure_speed("tiny", ["cove"], num_prompts=3, repeats=1, config=fakes, overrides=["cove.epochs=0"],
                  log=lambda _: None)
    assert configs["cove"]["epochs"] == 0
    assert fitted["cove"] == fitted["bigrec"] == QUICK_FIT_USERS  # a few users' sequences, same for every method
    measure_speed("tiny", ["cove"], num_prompts=3, repeats=1, config=fakes, quick_fit=False, log=lambda _: None)
    assert configs["cove"]["epochs"] == 14 and fitted["cove"] == 40  # tiny: every user has training items


def test_overrides_are_routed_and_mistakes_refused(fakes: dict[str, Any]):
    assert route_overrides(["eval.target=valid", "cove.epochs=0"], ["cove", "bigrec"]) == {
        "cove": ["eval.target=valid", "cove.epochs=0"], "bigrec": ["eval.target=valid"]}
    with pytest.raises(BenchError, match="section 'sasrec' is neither eval nor one of the measured methods"):
        route_overrides(["sasrec.epochs=1"], ["cove"])
    with pytest.raises(BenchError, match="listed twice"):
        measure_speed("tiny", ["cove", "cove"], config=fakes)
    with pytest.raises(BenchError, match="Unknown method 'coev'"):
        measure_speed("tiny", ["coev"], config=fakes)


def test_cli_prints_table_and_writes_record(fakes: dict[str, Any], isolated: Path):
    import torch
    from typer.testing import CliRunner

    from bench.cli import app

    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["speed", "--dataset", "tiny", "--methods", "cove,bigrec", "--num-prompts",
                                          "4", "--repeats", "2", "--threads", "1", "--precision", "auto"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    assert "| cove |" in result.output and "cove / bigrec samples/s" in result.output
    record = json.loads((isolated / "results" / "speed" / "tiny-cpu.json").read_text())
    assert record["hardware"]["torch_threads"] == 1 and record["config"]["threads"] == 1
    assert record["config"]["precision"] == "auto"


def test_a_labelled_comparison_keeps_the_main_record_and_bad_labels_are_refused(fakes: dict[str, Any],
                                                                               isolated: Path):
    from bench.report.speed_tables import render_speed

    main = measure_speed("tiny", ["cove", "bigrec"], num_prompts=2, repeats=1, config=fakes, log=lambda _: None)
    labelled = measure_speed("tiny", ["cove"], num_prompts=2, repeats=1, config=fakes, label="same_backbone",
                             log=lambda _: None)
    assert labelled.path == isolated / "results" / "speed" / "tiny-cpu-same_backbone.json"
    assert main.path.exists() and json.loads(main.path.read_text())["measured_in_order"] == ["cove", "bigrec"]
    assert "batch 1 · quick-fit weights · same backbone" in "\n".join(render_speed([labelled.record]))
    for bad in ("../x", "Same", "a-b", "x" * 41, "trained", "b32"):  # the last two would hit main records
        with pytest.raises(BenchError, match="--label"):
            measure_speed("tiny", ["cove"], config=fakes, label=bad, log=lambda _: None)
    # From the command line: one line, exit 2, before any method is built (the process has no fakes).
    result = subprocess.run([sys.executable, "-m", "bench.cli", "speed", "--dataset", "tiny", "--methods", "cove",
                             "--label", "../x"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "--label '../x'" in result.stderr
    assert sorted(p.name for p in (isolated / "results" / "speed").iterdir()) == ["tiny-cpu-same_backbone.json",
                                                                               "tiny-cpu.json"]


def test_one_precision_for_every_backbone_method_and_a_mixed_ratio_is_no_headline(fakes: dict[str, Any],
                                                                                isolated: Path):
    from bench.report.speed_tables import render_speed

    fakes["cove"]["precision"], fakes["bigrec"]["precision"] = "fp32", "bf16"
    said: list[str] = []
    mixed = measure_speed("tiny", ["cove", "bigrec"], num_prompts=2, repeats=1, config=fakes, log=said.append)
    assert any("different precisions (cove fp32, bigrec bf16)" in line for line in said)
    table = "\n".join(render_speed([mixed.record]))
    assert "| cove | quick-fit | fp32 |" in table and "| bigrec | quick-fit | bf16 |" in table
    assert "cove / bigrec samples/s: **" not in table
    assert "not a headline: cove ran in fp32, bigrec in bf16, so the ratio mixes number formats" in table

    said.clear()
    alike = measure_speed("tiny", ["cove", "bigrec"], num_prompts=2, repeats=1, config=fakes, precision="bf16",
                          log=said.append)
    assert seen().CONFIGS["cove"]["precision"] == seen().CONFIGS["bigrec"]["precision"] == "bf16"
    assert alike.record["config"]["precision"] == "bf16" and not any("different precisions" in s for s in said)
    assert "cove / bigrec samples/s: **" in "\n".join(render_speed([alike.record]))

    del fakes["bigrec"]["precision"]  # a method without a backbone precision is left as it is; --set still wins
    measure_speed("tiny", ["cove", "bigrec"], num_prompts=2, repeats=1, config=fakes, precision="bf16",
                  overrides=["cove.precision=fp32"], log=lambda _: None)
    assert seen().CONFIGS["cove"]["precision"] == "fp32" and "precision" not in seen().CONFIGS["bigrec"]

    with pytest.raises(BenchError, match="--precision 'fp16': expected one of fp32, bf16, auto"):
        measure_speed("tiny", ["cove"], config=fakes, precision="fp16", log=lambda _: None)
    result = subprocess.run([sys.executable, "-m", "bench.cli", "speed", "--dataset", "tiny", "--methods", "cove",
                             "--precision", "fp16"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "--precision 'fp16'" in result.stderr


class FakeTrainable(FakeCoVE):
    """Trains once (a counter) and saves its 'weights' to the work dir; a finished work dir only loads."""

    name = "sasrec_native"
    loads_finished_runs = True
    TRAININGS: list[int] = []

    def fit(self, dataset):
        from bench.method import nothing_to_load

        super().fit(dataset)
        saved = self.context.work_dir / "weights.json"
        if saved.exists():
            self.weight = json.loads(saved.read_text())["weight"]
        elif self.context.resume_only:
            raise nothing_to_load(self.context.work_dir, self.name, "no weights.json")
        else:
            seen().FakeTrainable.TRAININGS.append(1)
            self.weight = sum(len(seq) for seq in dataset.split.train)  # depends on every training sequence
            saved.write_text(json.dumps({"weight": self.weight}))

    def describe(self):
        return {"weight": self.weight}


def test_trained_weights_are_loaded_from_a_copy_never_retrained(fakes: dict[str, Any], isolated: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    import methods
    from bench.runs.run import run

    fakes["sasrec_native"] = {"epochs": 5}
    monkeypatch.setitem(methods.METHODS, "sasrec_native", "tests.test_speed:FakeTrainable")
    trainings = seen().FakeTrainable.TRAININGS
    trainings.clear()
    recorded = run("sasrec_native", "tiny", config=fakes, progress=False, log=lambda _: None)
    assert len(trainings) == 1
    work = isolated / "cache" / "work" / "tiny" / f"sasrec_native-{recorded.record['config_hash']}"
    before = (work / "weights.json").read_bytes()

    outcome = measure_speed("tiny", ["sasrec_native", "cove"], num_prompts=3, repeats=1, config=fakes, trained=True,
                            log=lambda _: None)
    entry = outcome.record["methods"]["sasrec_native"]
    assert len(trainings) == 1, "a speed run must load the recorded weights, not train"
    assert entry["weights"]["kind"] == "trained" and entry["weights"]["record"] == f"runs/tiny/{recorded.path.name}"
    assert entry["method_info"]["weight"] == json.loads(before)["weight"]  # the full-data weights, not a quick fit
    assert outcome.record["methods"]["cove"]["weights"] == {"kind": "quick_fit"}
    assert outcome.path.name == "tiny-cpu-trained.json"  # the quick-fit record beside it keeps its name
    assert "sasrec_native (runs/tiny/" in outcome.record["weights"] and "NOT trained" in outcome.record["weights"]
    assert (work / "weights.json").read_bytes() == before and not list(work.parent.glob("speed-*"))

    # A bench-evaluate re-scoring of those weights (better on test, weights copied) is never the one timed.
    variant = {**recorded.record, "config_hash": "rescored0001", "weights_from": {"config_hash": "x"},
               "metrics": {**recorded.record["metrics"], "ndcg@10": 1.0}}
    (recorded.path.parent / "sasrec_native-rescored0001.json").write_text(json.dumps(variant))
    shutil.copytree(work, work.parent / "sasrec_native-rescored0001")
    again = measure_speed("tiny", ["sasrec_native"], num_prompts=3, repeats=1, config=fakes, trained=True,
                          log=lambda _: None)
    assert again.record["methods"]["sasrec_native"]["weights"]["record"] == f"runs/tiny/{recorded.path.name}"

    # Its twin: without --trained the same method is quick-fitted (trains again, on a few users' sequences).
    plain = measure_speed("tiny", ["sasrec_native"], num_prompts=3, repeats=1, config=fakes, log=lambda _: None)
    assert len(trainings) == 2 and plain.record["methods"]["sasrec_native"]["weights"] == {"kind": "quick_fit"}
    assert plain.record["methods"]["sasrec_native"]["method_info"]["weight"] < json.loads(before)["weight"]

    # A method given a --preset is timed as that preset's quick fit, not as its best recorded run.
    fakes["sasrec_native"]["presets"] = {"short": {"epochs": 3}}
    named = measure_speed("tiny", ["sasrec_native"], num_prompts=3, repeats=1, config=fakes, trained=True,
                          presets=["sasrec_native=short"], log=lambda _: None)
    assert len(trainings) == 3 and named.record["methods"]["sasrec_native"]["weights"] == {"kind": "quick_fit"}
    with pytest.raises(BenchError, match="uses recorded weights, whose settings are the record's"):
        measure_speed("tiny", ["sasrec_native"], records=[recorded.path], presets=["sasrec_native=short"],
                      config=fakes, log=lambda _: None)
    del fakes["sasrec_native"]["presets"]

    # Explicit records are checked before anything is timed.
    with pytest.raises(BenchError, match="not among --methods"):
        measure_speed("tiny", ["cove"], records=[recorded.path], config=fakes, log=lambda _: None)
    with pytest.raises(BenchError, match="whose settings are the record's"):
        measure_speed("tiny", ["sasrec_native"], records=[recorded.path], overrides=["sasrec_native.epochs=1"],
                      config=fakes, log=lambda _: None)
    with pytest.raises(BenchError, match="no such record file"):
        measure_speed("tiny", ["sasrec_native"], records=[isolated / "missing.json"], config=fakes, log=lambda _: None)
    with pytest.raises(BenchError, match="two records for sasrec_native"):
        measure_speed("tiny", ["sasrec_native"], records=[recorded.path] * 2, config=fakes, log=lambda _: None)
    (work / "weights.json").unlink()  # a work dir without a finished training: refused, never trained
    with pytest.raises(BenchError, match="no finished sasrec_native training to load"):
        measure_speed("tiny", ["sasrec_native"], records=[recorded.path], config=fakes, log=lambda _: None)
    assert len(trainings) == 3
    shutil.rmtree(work)
    with pytest.raises(BenchError, match="trained weights .* are gone"):
        measure_speed("tiny", ["sasrec_native"], records=[recorded.path], config=fakes, log=lambda _: None)
    monkeypatch.setattr(FakeTrainable, "loads_finished_runs", False)
    monkeypatch.setattr(seen().FakeTrainable, "loads_finished_runs", False)
    with pytest.raises(BenchError, match="cannot promise to only load"):
        measure_speed("tiny", ["sasrec_native"], records=[recorded.path], config=fakes, log=lambda _: None)


def test_timing_never_reuses_a_methods_cached_work(fakes: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    """Method.timing_overrides win over the config while timing (BIGRec's reuse_generations would time lookups)."""
    monkeypatch.setattr(seen().FakeBIGRec, "timing_overrides", {"reuse_generations": False})
    fakes["bigrec"] = {"max_new_tokens": 64, "reuse_generations": True}
    outcome = measure_speed("tiny", ["bigrec"], num_prompts=3, repeats=1, config=fakes, log=lambda _: None)
    assert seen().CONFIGS["bigrec"]["reuse_generations"] is False
    assert outcome.record["config"]["methods"]["bigrec"]["bigrec"]["reuse_generations"] is False


def test_a_preset_names_the_quick_fitted_model_and_mistakes_are_refused_before_work(fakes: dict[str, Any],
                                                                                    isolated: Path):
    """--preset METHOD=NAME: the quick fit of that preset's model (so its speed can stand beside the preset's
    accuracy row); the quick fit's own keys and --set still win; the other methods keep their defaults."""
    configs = seen().CONFIGS
    fakes["cove"]["presets"] = {"cpu": {"compression_ratio": 4, "epochs": 9}}
    outcome = measure_speed("tiny", ["cove", "bigrec"], num_prompts=3, repeats=1, config=fakes, presets=["cove=cpu"],
                            log=lambda _: None)
    assert configs["cove"]["compression_ratio"] == 4 and configs["cove"]["preset"] == "cpu"
    assert configs["cove"]["epochs"] == QUICK_FIT["epochs"] and configs["bigrec"] == {"max_new_tokens": 64}
    assert outcome.record["config"]["presets"] == {"cove": "cpu"}
    assert outcome.record["config"]["methods"]["cove"]["cove"]["preset"] == "cpu"
    measure_speed("tiny", ["cove"], num_prompts=3, repeats=1, config=fakes, presets=["cove=cpu"],
                  overrides=["cove.compression_ratio=8"], log=lambda _: None)
    assert configs["cove"]["compression_ratio"] == 8
    measure_speed("tiny", ["cove"], num_prompts=3, repeats=1, config=fakes, log=lambda _: None)
    assert configs["cove"]["compression_ratio"] == 2 and "preset" not in configs["cove"]  # its twin: no preset

    assert route_presets(["cove=cpu", " bigrec = few "], ["cove", "bigrec"]) == {"cove": "cpu", "bigrec": "few"}
    for bad, message in [("cove", "expected METHOD=NAME"), ("sasrec=cpu", "not one of the measured methods"),
                         ("cove=", "expected METHOD=NAME")]:
        with pytest.raises(BenchError, match=message):
            route_presets([bad], ["cove"])
    with pytest.raises(BenchError, match="already has preset 'cpu'"):
        route_presets(["cove=cpu", "cove=gpu"], ["cove"])
    written = isolated / "results" / "speed" / "tiny-cpu.json"
    before = written.read_bytes()
    for bad, message in [("pop=nope", "error: Unknown preset 'nope' for pop"), ("pop", "expected METHOD=NAME")]:
        result = subprocess.run([sys.executable, "-m", "bench.cli", "speed", "--dataset", "tiny", "--methods", "pop",
                                 "--preset", bad], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                                text=True)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert written.read_bytes() == before  # refused before anything was timed or recorded
