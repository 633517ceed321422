"""CLI behaviour: lazy imports, one-line user errors, overrides, records and reuse."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import start_fitting_run

from bench.config import apply_override, method_config
from bench.errors import BenchError
from bench.registry import Registry, method_registry

REPO = Path(__file__).resolve().parent.parent


def bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_list_imports_no_heavy_backend():
    code = ("import sys; from bench.cli import main; sys.argv=['bench','list']\n"
            "try:\n    main()\nexcept SystemExit: pass\n"
            "heavy=[m for m in ('torch','transformers','recbole') if m in sys.modules]; print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True).stdout
    assert "cove" in out and "beauty" in out
    assert "HEAVY []" in out


def test_unknown_method_is_one_line_with_choices(isolated: Path):
    result = bench("run", "--method", "coev", "--dataset", "tiny")
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: Unknown method 'coev'. Did you mean 'cove'? Available: bigrec, cove, "
                                     "gru4rec, lcrec, pop, sasrec, sasrec_native, tiger")


def test_missing_data_dir_is_one_line(isolated: Path):
    result = bench("run", "--method", "pop", "--dataset", "beauty", env={"BENCH_DATA_DIR": str(isolated / "x")})
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_registry_errors():
    registry = Registry("method")
    registry.register("a", "m:A")
    with pytest.raises(ValueError, match="module:object"):
        registry.register("b", "nocolon")
    with pytest.raises(ValueError, match="twice"):
        registry.register("a", "m:B")
    with pytest.raises(BenchError, match="Unknown method 'z'. Available: a"):
        registry.load("z")
    assert {"pop", "sasrec", "gru4rec", "cove", "bigrec"} <= set(method_registry().names())


def test_overrides_parse_values_and_refuse_typos():
    config = {"eval": {"ks": [5]}, "m": {"lr": 0.1, "name": "x", "presets": {"paper": {"lr": 0.5}}}}
    effective = method_config(config, "m", "paper", ["m.lr=1e-4", "eval.ks=[5, 10]", "m.name=hello"])
    assert effective == {"eval": {"ks": [5, 10]}, "m": {"lr": 1e-4, "name": "hello", "preset": "paper"}}
    with pytest.raises(BenchError, match="unknown key 'lrr'"):
        apply_override(effective, "m.lrr=1")
    with pytest.raises(BenchError, match="expected section.key=value"):
        apply_override(effective, "lr=1")
    with pytest.raises(BenchError, match="Unknown preset"):
        method_config(config, "m", "nope")


def test_run_records_then_reuses(isolated: Path):
    first = bench("run", "--method", "pop", "--dataset", "tiny")
    assert first.returncode == 0, first.stderr
    records = list((isolated / "results" / "runs" / "tiny").glob("pop-*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    for key in ("method", "dataset", "split_hash", "config", "config_hash", "seed", "metrics", "train_seconds",
                "samples_per_sec", "peak_memory_mb", "device", "subsample", "versions", "git_rev", "created"):
        assert key in record
    assert set(record["metrics"]) == {f"{m}@{k}" for m in ("ndcg", "hr") for k in (5, 10, 20)}
    assert record["config"]["eval"]["mask_history"] is False and record["subsample"] is None
    second = bench("run", "--method", "pop", "--dataset", "tiny")
    assert "reused" in second.stdout
    third = bench("run", "--method", "pop", "--dataset", "tiny", "--set", "eval.max_eval_users=10")
    assert third.returncode == 0
    sub = [json.loads(p.read_text()) for p in (isolated / "results" / "runs" / "tiny").glob("pop-*.json")]
    assert sorted(r["num_eval_requests"] for r in sub) == [10, 40]
    assert any(r["subsample"] and r["subsample"]["eval_requests"] == 10 for r in sub)


def test_sweep_records_one_run_per_grid_point(isolated: Path):
    result = bench("sweep", "--method", "pop", "--dataset", "tiny", "--grid", "eval.max_eval_users=10,20",
                   "--grid", "eval.mask_history=false,true")
    assert result.returncode == 0, result.stderr
    records = [json.loads(p.read_text()) for p in (isolated / "results" / "runs" / "tiny").glob("pop-*.json")]
    points = sorted((r["num_eval_requests"], r["mask_history"]) for r in records)
    assert points == [(10, False), (10, True), (20, False), (20, True)]
    bad = bench("sweep", "--method", "pop", "--dataset", "tiny", "--grid", "eval.max_eval_users")
    assert bad.returncode == 2 and "expected section.key=v1,v2" in bad.stderr


def test_cove_runs_on_a_random_backbone_folder_with_recorded_threads(isolated: Path):
    """`bench backbone random` + `--model FOLDER` + `--threads`: the path of the CPU compression sweep."""
    from tiny import word_tokenizer

    word_tokenizer(["Here is a list of items"]).save_pretrained(isolated / "tok")
    folder = isolated / "random-h16-l1"
    made = bench("backbone", "random", str(folder), "--hidden", "16", "--layers", "1",
                 "--tokenizer", str(isolated / "tok"))
    assert made.returncode == 0, made.stderr
    result = bench("sweep", "--method", "cove", "--dataset", "tiny", "--model", str(folder), "--threads", "1",
                   "--grid", "cove.compression_ratio=1,4", "--set", "cove.epochs=1", "--set", "cove.use_titles=false")
    assert result.returncode == 0, result.stderr
    records = [json.loads(p.read_text()) for p in (isolated / "results" / "runs" / "tiny").glob("cove-*.json")]
    assert sorted(r["method_info"]["compression_ratio"] for r in records) == [1, 4]
    for record in records:
        assert record["method_info"]["backbone"] == "random-h16-l1"
        assert record["hardware"]["torch_threads"] == 1 and record["hardware"]["cpu_count"] >= 1
    bad = bench("run", "--method", "pop", "--dataset", "tiny", "--threads", "0")
    assert bad.returncode == 2 and "--threads 0" in bad.stderr


@pytest.mark.parametrize("method", ["cove", "bigrec"])
def test_every_preset_in_bench_toml_parses(method: str):
    """A typo in a preset (e.g. the one-call `gpu` preset) must fail here, not on a GPU machine."""
    from bench.config import load_config
    from bench.runs.run import build_effective_config
    from methods.bigrec.settings import parse_settings as bigrec_settings
    from methods.cove.method import parse_settings as cove_settings

    parse = {"cove": cove_settings, "bigrec": bigrec_settings}[method]
    config = load_config()
    presets = sorted(config[method].get("presets", {}))
    assert "gpu" in presets
    for preset in presets:
        settings = parse(build_effective_config(config, method, preset, [], None)[method])
        assert settings is not None


@pytest.mark.parametrize("args", [("run", "--method", "pop"), ("run", "--method", "pop", "--dataset", "tiny",
                                                                "--seed", "abc"),
                                  ("run", "--method", "pop", "--dataset", "tiny", "--thread", "1"), ("runn",)])
def test_usage_errors_are_short_and_exit_2(args: tuple[str, ...], isolated: Path):
    result = bench(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("Usage: bench")
    assert len(result.stderr.strip().splitlines()) <= 4


def test_help_keeps_square_brackets():
    assert "[demo]" in bench("--help").stdout


def test_dry_run_says_whether_recorded_and_computes_nothing(isolated: Path):
    missing = bench("run", "--method", "pop", "--dataset", "tiny", "--dry-run")
    assert missing.returncode == 1 and missing.stdout.startswith("not recorded: ")
    assert not list((isolated / "results").rglob("*.json"))
    assert bench("run", "--method", "pop", "--dataset", "tiny").returncode == 0
    found = bench("run", "--method", "pop", "--dataset", "tiny", "--dry-run")
    assert found.returncode == 0 and found.stdout.startswith("recorded: ")


def test_ctrl_c_exits_130_with_a_message_and_no_record(isolated: Path):
    """A real SIGINT to the CLI process while a method trains (a fit that waits until interrupted)."""
    import signal

    process = start_fitting_run(isolated)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert not list((isolated / "results").rglob("*.json"))


@pytest.mark.parametrize("args, message", [
    (("--method", "sasrec", "--set", "sasrec.epochs=ten"), "--set/--model: sasrec.epochs: expected an integer >= 0"),
    (("--method", "sasrec", "--set", "sasrec.learning_rate=abc"), "sasrec.learning_rate: expected a number >= 0"),
    (("--method", "sasrec", "--set", "sasrec.epochs=-1"), "sasrec.epochs: expected an integer >= 0, got -1"),
    (("--method", "pop", "--set", "eval.ks=abc"), "eval.ks: expected a list"),
    (("--method", "pop", "--set", "eval.ks=[0, 10]"), "eval.ks: expected a list of positive integers"),
    (("--method", "pop", "--set", "eval.max_eval_users=-5"), "eval.max_eval_users: expected an integer >= 0"),
    (("--method", "pop", "--set", "eval.target=last"), "eval.target: expected one of test, valid"),
    (("--method", "pop", "--max-train-minutes", "-1"), "--max-train-minutes -1.0: expected a number of minutes >= 0"),
    (("--method", "pop", "--device", "gpu"), "--device 'gpu': expected cpu, cuda or cuda:N"),
    (("--method", "pop", "--set", "cove.epochs=1"), "this run's config has no section [cove]"),
    (("--method", "cove", "--set", "cove.epochs=ten"), "cove.epochs: expected an integer >= 0, got 'ten'"),
    (("--method", "cove", "--set", "cove.epoch=3"), "unknown key 'epoch' in [cove]. Did you mean 'epochs'?"),
    (("--method", "cove", "--preset", "papr"), "Unknown preset 'papr' for cove. Did you mean 'paper'?"),
    (("--method", "sasrc",), "Unknown method 'sasrc'. Did you mean 'sasrec'?"),
    (("--method", "sasrec", "--finish", "--force"), "--finish with --force: --finish ends the recorded config's"),
])
def test_bad_values_fail_in_one_line_before_any_work(args: tuple[str, ...], message: str, isolated: Path):
    dataset = () if "--dataset" in args else ("--dataset", "tiny")
    result = bench("run", *args, *dataset, env={"BENCH_DATA_DIR": str(isolated / "no-data-needed")})
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line, line
    assert not (isolated / "cache").exists()  # refused before the dataset was even prepared


def test_unknown_dataset_suggests_the_nearest(isolated: Path):
    result = bench("run", "--method", "pop", "--dataset", "beuty")
    assert result.returncode == 2 and "Did you mean 'beauty'?" in result.stderr


def test_cache_ls_and_clean_keep_resume_points(isolated: Path):
    assert bench("run", "--method", "sasrec", "--dataset", "tiny", "--set", "sasrec.epochs=1").returncode == 0
    unfinished = isolated / "cache" / "work" / "tiny" / "cove-0123456789ab"
    unfinished.mkdir(parents=True)
    (unfinished / "cove_last.safetensors").write_bytes(b"x" * 1000)
    listing = bench("cache", "ls").stdout
    assert "tiny/cove-0123456789ab  unfinished (resumable)" in listing and "recorded" in listing
    listed = json.loads(bench("cache", "ls", "--json").stdout)
    assert sorted(e["recorded"] for e in listed) == [False, True] and all(e["bytes"] > 0 for e in listed)
    cleaned = bench("cache", "clean", "--yes")
    assert cleaned.returncode == 0 and cleaned.stdout.startswith("removed 1 work dirs")
    assert unfinished.exists() and list((isolated / "results" / "runs" / "tiny").glob("sasrec-*.json"))
    assert bench("cache", "clean", "--all", "--yes").stdout.startswith("removed 1 work dirs")
    assert not unfinished.exists()


def test_cache_clean_asks_first_and_dry_run_removes_nothing(isolated: Path):
    """The work dirs hold the weights `rescore` and `speed --trained` need: no silent removal."""
    assert bench("run", "--method", "sasrec", "--dataset", "tiny", "--set", "sasrec.epochs=1").returncode == 0
    work = isolated / "cache" / "work" / "tiny"
    before = sorted(work.iterdir())
    dry = bench("cache", "clean", "--dry-run")
    assert dry.returncode == 0 and "would remove 1 work dirs" in dry.stdout and sorted(work.iterdir()) == before
    refused = subprocess.run([sys.executable, "-m", "bench.cli", "cache", "clean"], cwd=REPO, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "--yes" in refused.stderr and "rescore" in refused.stderr
    assert sorted(work.iterdir()) == before


def test_version_and_short_help():
    version = bench("--version")
    assert version.returncode == 0 and version.stdout.startswith("bench (recbench) ")
    for args in (("-h",), ("run", "-h"), ("cache", "clean", "-h")):
        shown = bench(*args)
        assert shown.returncode == 0 and shown.stdout.startswith("Usage: bench"), args


def test_list_shows_presets_with_their_bench_toml_comment():
    listed = bench("list")
    assert listed.returncode == 0, listed.stderr
    assert "cove.paper" in listed.stdout and "The authors' scripts" in listed.stdout
    assert "bigrec.few_shot" in listed.stdout and "few-shot setting" in listed.stdout
    document = json.loads(bench("list", "--json").stdout)
    assert "cove" in document["methods"] and "tiny" in document["datasets"]
    assert document["presets"]["tiger"]["small_t5"].startswith("A 0.28M-parameter T5")


def test_every_sweep_option_has_help_and_compare_usage_names_its_runs():
    import re

    sweep = bench("sweep", "--help").stdout
    options = re.findall(r"^\s+(--[a-z-]+)(.*)$", sweep, flags=re.M)
    assert len(options) >= 12 and all(rest.split(maxsplit=1)[1:] for _, rest in options), options
    # typer writes a required argument as {NAME}
    assert "Usage: bench compare [OPTIONS] {RUN_A} {RUN_B}" in bench("compare", "--help").stdout


def test_run_json_show_and_metrics_in_k_order(isolated: Path):
    result = bench("run", "--method", "pop", "--dataset", "tiny", "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "recorded" and document["record"]["method"] == "pop"
    assert json.loads(bench("run", "--method", "pop", "--dataset", "tiny", "--json").stdout)["status"] == "reused"
    dry = json.loads(bench("run", "--method", "pop", "--dataset", "tiny", "--dry-run", "--json").stdout)
    assert dry["recorded"] is True
    text = bench("run", "--method", "pop", "--dataset", "tiny").stdout
    order = [part.split("=")[0] for part in text.splitlines()[0].split(": ", 1)[1].split()]
    assert order == ["ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20"]
    shown = bench("show", document["path"])
    assert shown.returncode == 0 and shown.stdout.startswith("pop on tiny")
    assert "metrics:    ndcg@5=" in shown.stdout and "hr@5=" in shown.stdout.split("hr@10")[0]
    by_label = bench("show", "pop", "--dataset", "tiny")
    assert by_label.stdout == shown.stdout
    quiet = bench("leaderboard", "--quiet")
    assert quiet.returncode == 0 and quiet.stdout.startswith("wrote ") and "# Leaderboard" not in quiet.stdout


def test_hash_neutral_keys_at_their_neutral_value_keep_the_hash():
    from bench.config import config_hash, hashed_config, load_config

    config = load_config()
    # BIGRec as it ran before validation loss became its default selection: every neutral key at its value
    effective = method_config(config, "bigrec", overrides=["bigrec.selection=ndcg"])
    neutral = config["hash_neutral"]
    assert effective["bigrec"]["decode_length"] == neutral["bigrec.decode_length"]
    # the config as it was before the neutral keys existed
    without = {section: {k: v for k, v in values.items() if f"{section}.{k}" not in neutral}
               for section, values in effective.items()}
    assert config_hash(hashed_config(effective, neutral)) == config_hash(without)
    changed = method_config(config, "bigrec", overrides=["bigrec.selection=ndcg", "bigrec.decode_length=12"])
    assert config_hash(hashed_config(changed, neutral)) != config_hash(without)
    default = method_config(config, "bigrec")  # today's default (validation loss) is another run
    assert config_hash(hashed_config(default, neutral)) != config_hash(without)
    assert effective["bigrec"]["decode_length"] == "eos"  # the record keeps the full config


def test_make_demo_reuses_every_committed_record(real_data_dir: Path):
    """A fresh clone's `make demo` must print the table in seconds, never retrain: every [demo] run's
    config must hash to a committed record (a new key in bench.toml changes the hash unless it is
    listed in [hash_neutral])."""
    from bench.config import load_config
    from bench.runs.run import run

    config = load_config()
    demo = config["demo"]
    for entry in demo["runs"]:
        outcome = run(entry["method"], demo["dataset"], overrides=entry.get("set", []), config=config,
                      preset=entry.get("preset"), max_train_minutes=entry.get("max_train_minutes"), dry_run=True)
        assert outcome.reused, f"{entry['method']}: {outcome.path.name} is not committed"


def test_demo_prints_one_table_of_converged_rows_only(real_data_dir: Path, tmp_path: Path):
    """Issue 23 item 8 and 26: the table once; each method's strongest converged row (sasrec_native included,
    the converged gru4rec over the demo's 40-minute one); a method whose runs were all cut by a budget is
    named under the table, never a row; 256-user rows no better than pop are left out of the demo's table
    (the leaderboard keeps them)."""
    import shutil

    shutil.copytree(REPO / "results", tmp_path / "results")  # the demo rewrites the tables it reads from
    result = bench("demo", env={"BENCH_RESULTS_DIR": str(tmp_path / "results")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("== demo on beauty: 7 of 7 runs recorded")
    assert all(len(line) <= 100 for line in lines)
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[1:2] == ["full"]}
    assert [line.split()[0] for line in lines].count("method") == 1  # printed once
    assert {"pop", "sasrec_native", "gru4rec"} <= set(rows) and "sasrec" not in rows
    assert "early stop, 24/200 ep" in rows["gru4rec"] and not any("CUT" in row for row in rows.values())
    assert "not-converged tables): sasrec (CUT 40 min, 3/200 ep)." in " ".join(lines)
    assert not any("256/22,363 req" in line for line in lines[:len(rows) + 2])
    assert "Not shown (HR@10 not significantly above pop's" in result.stdout
    assert lines[-1].startswith("full tables:")


def test_demo_rows_keep_a_subsample_row_only_when_it_beats_pop():
    from bench.report.demo import choose_rows

    def record(method: str, hr: float, n: int, **extra: object) -> dict:
        return {"method": method, "dataset": "d", "split_hash": "s", "eval_target": "test", "mask_history": False,
                "metrics": {"ndcg@10": hr / 2, "hr@10": hr}, "num_eval_requests": n, "config_hash": method + str(n),
                **extra}

    pop = record("pop", 0.015, 20000)
    sub = {"eval_requests": 256, "eval_requests_total": 20000}
    near = record("cove", 0.0, 256, subsample=sub)
    strong = record("bigrec", 0.2, 256, subsample=sub)
    cut = record("gru4rec", 0.06, 20000, method_info={"stopped_by": "max_train_minutes"})
    done = record("gru4rec", 0.05, 20000, method_info={"stopped_by": "early_stopping"}, config_hash="g2")
    rescored = {**done, "metrics": {"ndcg@10": 0.026, "hr@10": 0.05}, "config_hash": "g3",
                "weights_from": {"config_hash": "g2"}}  # bench evaluate: done's weights, another scoring switch
    table = choose_rows([pop, near, strong, cut], [pop, near, strong, cut, done, rescored], floor="pop")
    assert [r["method"] for r in table.rows] == ["bigrec", "gru4rec", "pop"] and table.rows[1] is done
    assert table.left_out == [near] and table.replaced == [(cut, done)]


def test_baselines_train_one_after_another_and_refuse_unknown_names(isolated: Path):
    result = bench("baselines", "--dataset", "tiny", "--only", "pop,sasrec_native", "--threads", "1")
    assert result.returncode == 0, result.stderr
    records = {p.name.split("-")[0]: json.loads(p.read_text())
               for p in (isolated / "results" / "runs" / "tiny").glob("*.json")}
    assert set(records) == {"pop", "sasrec_native"}
    native = records["sasrec_native"]["method_info"]
    assert native["stopped_by"] in ("early_stopping", "epochs") and native["epochs_run"] >= 1
    assert records["sasrec_native"]["exclusive"] is True and records["sasrec_native"]["hardware"]["torch_threads"] == 1
    elsewhere = bench("baselines", "--dataset", "tiny", "--only", "pop", "--results-dir", str(isolated / "other"))
    assert elsewhere.returncode == 0 and "recorded at" in elsewhere.stdout  # not reused from results/
    assert list((isolated / "other" / "runs" / "tiny").glob("pop-*.json"))
    again = bench("baselines", "--dataset", "tiny", "--only", "pop", "--results-dir", str(isolated / "other"),
                  "--force")
    assert again.returncode == 0 and "recorded at" in again.stdout
    bad = bench("baselines", "--dataset", "tiny", "--only", "bert4rec")
    assert bad.returncode == 2 and "expected some of pop, sasrec_native, gru4rec, sasrec" in bad.stderr


def sign_test_p(up: int, down: int) -> float:
    """Exact two-sided sign-flip p of `up` differences of +1 and `down` of -1, from binomial counts."""
    m, observed = up + down, abs(up - down)
    return sum(math.comb(m, k) for k in range(m + 1) if abs(2 * k - m) >= observed) / 2 ** m


def test_compare_two_runs_request_by_request(isolated: Path):
    for method in ("pop", "sasrec_native"):
        done = bench("run", "--method", method, "--dataset", "tiny", "--threads", "1",
                     *(["--set", "sasrec_native.epochs=3"] if method == "sasrec_native" else []))
        assert done.returncode == 0, done.stderr
    result = bench("compare", "sasrec_native", "pop", "--dataset", "tiny")
    assert result.returncode == 0, result.stderr
    assert "A = sasrec_native" in result.stdout and "paired request by request" in result.stdout
    lines = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.startswith(("ndcg@", "hr@"))}
    assert set(lines) == {"ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20"}
    document = json.loads(bench("compare", "sasrec_native", "pop", "--dataset", "tiny", "--json").stdout)
    assert document["a"]["label"].startswith("sasrec_native") and document["requests"] == 40
    assert document["metrics"]["hr@10"]["difference"] == pytest.approx(float(lines["hr@10"][3]), abs=1e-4)
    # Everything checked against values computed here from the stored ranks, not from the printed table.
    folder = isolated / "results" / "runs" / "tiny"
    ranks = {}
    for path in folder.glob("*.json"):
        record = json.loads(path.read_text())
        with np.load(folder / record["ranks"]["file"]) as stored:
            ranks[record["method"]] = stored["test_rank"].astype(int)
    a, b = ranks["sasrec_native"], ranks["pop"]
    hit_diff = (a < 10).astype(int) - (b < 10).astype(int)
    assert float(lines["hr@10"][3]) == pytest.approx(hit_diff.mean(), abs=6e-5)
    p = sign_test_p(int((hit_diff > 0).sum()), int((hit_diff < 0).sum()))
    assert lines["hr@10"][-1] == f"{p:.2g}"
    # A 95 % percentile bootstrap of the mean difference, drawn here with another generator.
    resampled = hit_diff[np.random.default_rng(123).integers(0, len(a), (4000, len(a)))].mean(axis=1)
    low, high = np.quantile(resampled, [0.025, 0.975])
    shown = [float(x.strip("[],")) for x in lines["hr@10"][4:6]]
    assert shown == pytest.approx([low, high], abs=1.01 / len(a))  # within one request's step
    gain_a, gain_b = (np.where(r < 10, 1 / np.log2(r + 2), 0.0) for r in (a, b))  # NDCG@10 per request
    wins = ((gain_a > gain_b).sum(), (gain_b > gain_a).sum(), (gain_a == gain_b).sum())
    assert (f"per-request ndcg@10: higher for A on {wins[0]:,} requests, for B on {wins[1]:,}, "
            f"equal on {wins[2]:,}") in result.stdout
    files = sorted(folder.glob("*.json"))
    by_file = bench("compare", str(files[0]), str(files[1]))
    assert by_file.returncode == 0, by_file.stderr
    ambiguous = bench("compare", "cove", "pop", "--dataset", "tiny")
    assert ambiguous.returncode == 2 and "expected exactly one record" in ambiguous.stderr


def ranked_record(folder: Path, name: str, ranks: np.ndarray, requests: np.ndarray | None = None,
                  **fields: object) -> Path:
    """A hand-made record of `ranks` at the test position, its ranks file beside it."""
    from bench.runs.metrics import metrics_from_ranks
    from bench.store.request_ranks import save_ranks
    from bench.store.results import write_record

    path = folder / f"{name}.json"
    positions = {"test": (np.arange(len(ranks)) if requests is None else requests, ranks)}
    positions.update(fields.pop("extra_positions", {}))  # type: ignore[arg-type]
    record = {"method": name, "dataset": "beauty", "split_hash": "h1", "split_protocol": "leave_one_out",
              "mask_history": False, "eval_target": "test", "config": {}, "config_hash": name, "seed": 0,
              "metrics": metrics_from_ranks(ranks), "train_seconds": 1.0, "samples_per_sec": 1.0,
              "peak_memory_mb": 1.0, "device": "cpu", "subsample": None, "versions": {}, "git_rev": "abc",
              "created": "2026-01-02", **fields}
    record["ranks"] = save_ranks(path, positions)
    write_record(path, record)
    return path


def test_compare_thirty_requests_where_a_hits_five_and_b_none(tmp_path: Path):
    """The issue's example: p = 2/32 exactly on every metric (only all-plus and all-minus of the 2^5 sign
    patterns reach the observed sum); the normal approximation printed 0.016."""
    from bench.report.compare import compare
    from bench.store.results import read_record

    a_ranks, b_ranks = np.full(30, 5000), np.full(30, 5000)
    a_ranks[:5] = 0
    a, b = ranked_record(tmp_path, "a", a_ranks), ranked_record(tmp_path, "b", b_ranks)
    result = compare((a, read_record(a)), (b, read_record(b)))
    assert {m["p"] for m in result["metrics"].values()} == {0.0625}
    assert result["wins"] == {"metric": "ndcg@10", "a": 5, "b": 0, "tie": 25}
    shown = bench("compare", str(a), str(b))
    assert shown.returncode == 0, shown.stderr
    assert "per-request ndcg@10: higher for A on 5 requests, for B on 0, equal on 25" in shown.stdout
    assert "randomisation (sign-flip) test" in shown.stdout and "normal approximation" not in shown.stdout


def test_compare_counts_wins_on_the_metric_not_on_placeholder_ranks(tmp_path: Path):
    """A hits the top 10 on 50 requests and ranks the target 9,000th elsewhere; B never hits but ranks it
    8,000th: raw ranks would give B 950 wins, the metric gives them to A."""
    from bench.report.compare import compare
    from bench.store.results import read_record

    a_ranks, b_ranks = np.full(1000, 9000), np.full(1000, 8000)
    a_ranks[:50] = 3
    a, b = ranked_record(tmp_path, "a", a_ranks), ranked_record(tmp_path, "b", b_ranks)
    result = compare((a, read_record(a)), (b, read_record(b)))
    assert result["wins"] == {"metric": "ndcg@10", "a": 50, "b": 0, "tie": 950}


@pytest.mark.parametrize(("field", "a_value", "b_value"), [("mask_history", False, True),
                                                           ("split_protocol", "leave_one_out", "global_time")])
def test_compare_refuses_runs_under_another_protocol(field: str, a_value: object, b_value: object, tmp_path: Path):
    ranks = np.arange(40) % 30
    a = ranked_record(tmp_path, "a", ranks, **{field: a_value})
    b = ranked_record(tmp_path, "b", ranks, **{field: b_value})
    refused = bench("compare", str(a), str(b))
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        f"error: {field} differs: a.json has {a_value!r}, b.json has {b_value!r}; not comparable"]


def test_compare_refuses_the_same_number_of_other_requests(tmp_path: Path):
    from bench.report.compare import compare
    from bench.store.results import read_record

    ranks = np.arange(40) % 30
    a = ranked_record(tmp_path, "a", ranks, np.arange(40))
    b = ranked_record(tmp_path, "b", ranks, np.arange(40) + 40)
    with pytest.raises(BenchError, match="scored on different requests \\(40 each, not the same ones\\), neither"):
        compare((a, read_record(a)), (b, read_record(b)))


def test_compare_restricts_a_full_run_to_a_subsample_runs_requests(tmp_path: Path):
    """CoVE over all requests against BIGRec on a seeded subsample: CoVE's ranks of exactly those requests
    (in the subsample's order), paired with them; on either side of the comparison, and said in the output."""
    from bench.report.compare import compare
    from bench.store.results import read_record

    full_ranks = np.where(np.arange(100) % 2 == 0, 0, 5000)  # hits every even request
    chosen = np.array([40, 8, 96, 12, 0, 60, 20, 88])  # even requests, not in order
    full = ranked_record(tmp_path, "full", full_ranks)
    sub = ranked_record(tmp_path, "sub", np.full(8, 5000), chosen)
    result = compare((full, read_record(full)), (sub, read_record(sub)))
    assert result["requests"] == 8 and result["restricted"] == {"side": "A", "from": 100, "to": 8}
    assert result["metrics"]["hr@5"]["a"] == 1.0 and result["wins"]["a"] == 8
    flipped = compare((sub, read_record(sub)), (full, read_record(full)))
    assert flipped["restricted"]["side"] == "B" and flipped["metrics"]["hr@5"]["b"] == 1.0
    shown = bench("compare", str(full), str(sub))
    assert shown.returncode == 0, shown.stderr
    assert "A: its ranks of these requests, from its 100 per-request ranks" in shown.stdout


def test_compare_says_when_a_runs_requests_at_that_position_chose_its_epoch(tmp_path: Path):
    from bench.report.compare import compare, render
    from bench.store.results import read_record

    ranks = np.arange(40) % 30
    note = "same trained model; 40 of these requests also chose the epoch (optimistic)"
    a = ranked_record(tmp_path, "a", ranks, extra_positions={"valid": (np.arange(40), ranks)},
                      metrics_by_position={"valid": {"metrics": {}, "num_eval_requests": 40, "note": note}})
    b = ranked_record(tmp_path, "b", ranks, extra_positions={"valid": (np.arange(40), ranks[::-1])})
    text = render("a", "b", compare((a, read_record(a)), (b, read_record(b)), "valid"))
    assert f"note: A at position valid: {note}" in text
    assert not any(line.startswith("note:") for line in render("a", "b", compare((a, read_record(a)),
                                                                                   (b, read_record(b)))))


def test_seeds_record_one_run_each_and_share_a_leaderboard_row(isolated: Path):
    result = bench("run", "--method", "sasrec_native", "--dataset", "tiny", "--seeds", "0,1", "--threads", "1",
                   "--set", "sasrec_native.epochs=2")
    assert result.returncode == 0, result.stderr
    records = [json.loads(p.read_text()) for p in (isolated / "results" / "runs" / "tiny").glob("*.json")]
    assert sorted(r["seed"] for r in records) == [0, 1]
    board = bench("leaderboard")
    assert board.returncode == 0, board.stderr
    # The row's label names its --set value.
    rows = [line for line in board.stdout.splitlines() if line.startswith("| sasrec_native[epochs=2] |")]
    assert len(rows) == 1 and "2 seeds (0, 1)" in rows[0] and " sd " in rows[0]
    mean = sum(r["metrics"]["ndcg@10"] for r in records) / 2
    assert f"{mean:.4f}" in rows[0]
    assert bench("run", "--method", "pop", "--dataset", "tiny", "--seeds", "x").returncode == 2


def test_rescore_attaches_ranks_only_when_they_reproduce_the_record(isolated: Path):
    done = bench("run", "--method", "sasrec_native", "--dataset", "tiny", "--threads", "1",
                 "--set", "sasrec_native.epochs=2", "--set", 'eval.extra_targets=["valid"]')
    assert done.returncode == 0, done.stderr
    path = next((isolated / "results" / "runs" / "tiny").glob("*.json"))
    record = json.loads(path.read_text())
    ranks_file = path.with_name(record.pop("ranks")["file"])
    ranks_file.unlink()
    path.write_text(json.dumps(record))  # as a record made before ranks were stored
    result = bench("rescore", str(path), "--threads", "1")
    assert result.returncode == 0, result.stderr
    again = json.loads(path.read_text())
    assert again["ranks"]["positions"] == {"test": 40, "valid": 40} and ranks_file.exists()
    assert again["ranks_added"]["by"] == "bench rescore" and again["metrics"] == record["metrics"]
    # Weights that are not the recorded run's: refused, record untouched.
    tampered = {**record, "metrics": {**record["metrics"], "ndcg@10": record["metrics"]["ndcg@10"] + 0.01}}
    path.write_text(json.dumps(tampered))
    ranks_file.unlink()
    refused = bench("rescore", str(path), "--threads", "1")
    assert refused.returncode == 2 and "not the recorded weights" in refused.stderr
    assert "ranks" not in json.loads(path.read_text())
