"""Leaderboard: comparable tables from records only, published numbers apart, identical on rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench.errors import BenchError
from bench.report.demo import training_text as demo_training_text
from bench.report.labels import training_text
from bench.report.leaderboard import load_reference, write_leaderboard
from bench.report.plots import setting_sweeps, write_plots
from bench.store.results import write_record

REPO = Path(__file__).resolve().parent.parent
METRICS = ("ndcg@5", "ndcg@10", "ndcg@20", "hr@5", "hr@10", "hr@20")


def metrics(base: float, **overrides: float) -> dict[str, float]:
    values = {metric: round(base * (1 + i), 4) for i, metric in enumerate(METRICS)}
    return {**values, **overrides}


def make_record(results: Path, method: str, values: dict[str, float], *, dataset: str = "beauty",
                split_hash: str = "h1", target: str = "test", ratio: float | None = None,
                backbone: str | None = None, requests: int = 100, seed: int = 0, name: str | None = None) -> Path:
    section: dict[str, Any] = {} if ratio is None else {"compression_ratio": ratio}
    subsample = None if requests == 100 else {"eval_requests": requests, "eval_requests_total": 100,
                                              "eval_seed": 0, "train": None}
    record = {
        "schema": 1, "method": method, "dataset": dataset, "split_hash": split_hash,
        "split_protocol": "leave_one_out", "eval_target": target, "mask_history": False,
        "config": {"eval": {"target": target}, method: section}, "config_hash": name or method,
        "seed": seed, "metrics": values, "num_eval_requests": requests, "train_seconds": 12.5,
        "samples_per_sec": 250.0, "peak_memory_mb": 100.0, "device": "cpu", "subsample": subsample,
        "method_info": {"backbone": backbone} if backbone else {}, "versions": {}, "git_rev": "abc",
        "created": "2026-01-02T03:04:05+00:00",
    }
    path = results / "runs" / dataset / f"{method}-{name or method}.json"
    write_record(path, record)
    return path


def speed_record(results: Path) -> None:
    record = {
        "dataset": "beauty", "device": "cpu", "hardware": {"name": "test cpu"}, "backbone": "SmolLM2-135M",
        "num_prompts": 8, "repeats": 3, "batch_size": 1, "weights": "quick fit", "config": {"quick_fit": True},
        "methods": {
            "cove": {"samples_per_sec": {"median": 40.0, "min": 35.0, "max": 41.0}, "peak_memory_mb": 900.0},
            "bigrec": {"samples_per_sec": {"median": 0.5, "min": 0.4, "max": 0.6}, "peak_memory_mb": 950.0,
                       "generated_tokens_per_sample": 64.0},
        },
        "measured_in_order": ["cove", "bigrec"],
    }
    (results / "speed").mkdir(parents=True, exist_ok=True)
    (results / "speed" / "beauty-cpu.json").write_text(json.dumps(record, sort_keys=True))  # as bench speed


def section(markdown: str, heading: str) -> str:
    """The text under one `### ` heading, up to the next heading."""
    start = markdown.index(heading)
    rest = markdown[start + len(heading):]
    end = min((rest.index(mark) for mark in ("\n### ", "\n## ") if mark in rest), default=len(rest))
    return rest[:end]


def row_of(table: str, method: str) -> list[str]:
    lines = [line for line in table.splitlines() if line.startswith(f"| {method} |")]
    assert len(lines) == 1, table
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


def test_table_columns_bolding_and_groups(tmp_path: Path):
    results = tmp_path / "results"
    sasrec_path = make_record(results, "sasrec", metrics(0.03, **{"hr@20": 0.10}))
    record = json.loads(sasrec_path.read_text())
    record["method_info"] = {"epochs_run": 31, "epochs_max": 200, "stopped_by": "early_stopping"}
    write_record(sasrec_path, record)
    cut_path = make_record(results, "gru4rec", metrics(0.09), name="cut")  # the best numbers, but cut short
    cut = json.loads(cut_path.read_text())
    cut["method_info"] = {"epochs_run": 3, "epochs_max": 200, "stopped_by": "max_train_minutes"}
    write_record(cut_path, cut)
    make_record(results, "pop", metrics(0.01, **{"hr@20": 0.20}))
    make_record(results, "cove", metrics(0.05), target="valid", ratio=2, backbone="SmolLM2-135M")
    make_record(results, "gru4rec", metrics(0.04), requests=10)
    markdown = write_leaderboard(results).markdown_text

    test_table = section(markdown, "### beauty · last item (test) · all 100 requests")
    sasrec, pop = row_of(test_table, "sasrec"), row_of(test_table, "pop")
    header = [cell.strip() for cell in test_table.strip().splitlines()[0].strip("|").split("|")]
    for column in ("method", "backbone", "swept", "NDCG@5", "NDCG@10", "NDCG@20", "HR@5", "HR@10", "HR@20",
                   "position", "data", "device", "date"):
        assert column in header
    ndcg10, hr20 = header.index("NDCG@10"), header.index("HR@20")
    # Best is per metric; the others have no per-request ranks, so they are marked untested, not just not bold.
    assert sasrec[ndcg10] == "**0.0600**" and pop[ndcg10] == "0.0200 †"
    assert pop[hr20] == "**0.2000**" and sasrec[hr20] == "0.1000 †"
    assert test_table.index("| sasrec |") < test_table.index("| pop |")  # sorted by NDCG@10
    assert sasrec[header.index("position")] == "test" and sasrec[header.index("data")] == "full"
    assert sasrec[header.index("date")] == "2026-01-02" and sasrec[header.index("device")] == "cpu"
    assert sasrec[header.index("training")] == "31/200 epochs, stopped by early_stopping"
    assert pop[header.index("training")] == "–"
    # A run its time budget stopped is never ranked beside converged runs: a table of its own.
    assert "| gru4rec |" not in test_table
    cut_table = section(markdown, "### beauty · last item (test) · all 100 requests · not converged: training "
                                  "stopped by its time budget")
    assert row_of(cut_table, "gru4rec")[header.index("training")] == "3/200 epochs, stopped by max_train_minutes"

    # Other positions and other request sets are separate tables, never ranked together.
    valid_table = section(markdown, "### beauty · second-to-last item (valid) · all 100 requests")
    cove = row_of(valid_table, "cove")
    assert cove[header.index("backbone")] == "SmolLM2-135M" and cove[header.index("swept")] == "ratio=2"
    assert "**" not in valid_table and "†" not in valid_table  # a lone row is neither bolded nor tested
    sub_table = section(markdown, "seeded subsample of 10 of 100 requests")
    assert "| gru4rec |" in sub_table and "| gru4rec |" not in test_table
    assert row_of(sub_table, "gru4rec")[header.index("data")] == "subsample (eval 10/100)"


def test_published_block_is_labelled_apart_and_never_bolded(tmp_path: Path):
    results = tmp_path / "results"
    make_record(results, "sasrec", metrics(0.03))
    make_record(results, "pop", metrics(0.01))
    (results / "reference").mkdir(parents=True)
    (results / "reference" / "paper.csv").write_text(
        "dataset,method,compression_ratio,eval_target,ndcg@5,ndcg@10,hr@5,hr@10,source\n"
        "beauty,CoVE,2,valid,0.0498,0.9593,0.0714,0.1009,cove-readme\n"
        "toys,SASRec,,test,0.0306,0.0374,0.0463,0.0675,cove-readme\n")
    written = write_leaderboard(results)
    markdown = written.markdown_text
    published = section(markdown, "### beauty · published numbers (not run here)")
    assert "| CoVE | 2 | 0.0498 | 0.9593 |" in published and "**" not in published
    assert "second-to-last item (valid)" in published and "cove-readme" in published
    assert "position differs between these rows" not in published  # one row, one position
    ours = section(markdown, "### beauty · last item (test) · all 100 requests")
    assert "**0.0600**" in ours  # our best stays bold although the published number is higher
    assert markdown.index("### beauty · last item") < markdown.index("### beauty · published")
    assert "## toys" in markdown and "No recorded runs yet." in section(markdown, "## toys")
    assert "CoVE" not in (results / "leaderboard.csv").read_text()  # never mixed into our data


def test_record_on_another_split_is_refused(tmp_path: Path):
    results = tmp_path / "results"
    make_record(results, "sasrec", metrics(0.03), split_hash="aaaa")
    make_record(results, "pop", metrics(0.01), split_hash="bbbb")
    make_record(results, "pop", metrics(0.01), dataset="toys", split_hash="cccc")
    with pytest.raises(BenchError, match=r"'beauty'.*different splits: aaaa \(sasrec-sasrec.json\), "
                                         r"bbbb \(pop-pop.json\)"):
        write_leaderboard(results)
    assert not (results / "leaderboard.md").exists()


def test_malformed_reference_fails_with_its_line(tmp_path: Path):
    (tmp_path / "bad.csv").write_text("dataset,method,compression_ratio,eval_target,ndcg@5,source\n"
                                      "beauty,X,,test,0.01,s\nbeauty,Y,,test,zero,s\n")
    with pytest.raises(BenchError, match=r"bad.csv:3: ndcg@5 is not a number"):
        load_reference(tmp_path)
    (tmp_path / "bad.csv").write_text("dataset,method,eval_target,source\n")
    with pytest.raises(BenchError, match="missing columns"):
        load_reference(tmp_path)


def test_committed_reference_holds_the_issue_numbers():
    rows = {(r["dataset"], r["method"]): r for r in load_reference(REPO / "results" / "reference")}
    assert (rows["beauty", "SASRec"]["ndcg@5"], rows["beauty", "SASRec"]["hr@10"]) == (0.0249, 0.0605)
    assert (rows["beauty", "GRU4Rec"]["ndcg@10"], rows["beauty", "GRU4Rec"]["hr@5"]) == (0.0137, 0.0164)
    cove = rows["beauty", "CoVE"]
    assert (cove["ndcg@5"], cove["ndcg@10"], cove["hr@5"], cove["hr@10"]) == (0.0498, 0.0593, 0.0714, 0.1009)
    assert cove["eval_target"] == "valid" and rows["beauty", "SASRec"]["eval_target"] == "test"


def test_compression_sweep_is_normalised_to_ratio_one(tmp_path: Path):
    results = tmp_path / "results"
    for ratio, ndcg in ((1, 0.040), (2, 0.036), (4, 0.030)):
        make_record(results, "cove", metrics(0.01, **{"ndcg@10": ndcg, "hr@10": 2 * ndcg}), ratio=ratio,
                    name=f"r{ratio}")
    make_record(results, "cove", metrics(0.01, **{"ndcg@10": 0.032, "hr@10": 0.064}), ratio=4, seed=1, name="r4s1")
    make_record(results, "sasrec", metrics(0.01, **{"ndcg@10": 0.020, "hr@10": 0.050}))
    make_record(results, "pop", metrics(0.01, **{"ndcg@10": 0.010, "hr@10": 0.060}))
    make_record(results, "cove", metrics(0.05), target="valid", ratio=2, name="lone")  # one ratio: no sweep
    [sweep] = setting_sweeps([(p, json.loads(p.read_text())) for p in sorted(results.rglob("*.json"))])
    assert sweep.points == [1.0, 2.0, 4.0] and sweep.runs == [1, 1, 2]
    assert sweep.normalised("ndcg@10") == pytest.approx([1.0, 0.9, 0.775])
    assert sweep.baseline == {"ndcg@10": ("sasrec", 0.020), "hr@10": ("pop", 0.060)}


def test_plots_skip_without_data_and_remove_stale(tmp_path: Path):
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "compression-old-test.png").write_bytes(b"stale")
    assert write_plots([], [], plots) == [] and not list(plots.glob("*.png"))


def build(results: Path) -> dict[str, bytes]:
    paths = write_leaderboard(results).paths
    return {path.relative_to(results).as_posix(): path.read_bytes() for path in paths}


def test_rebuild_gives_identical_files_and_plots_open(tmp_path: Path):
    from PIL import Image

    results = tmp_path / "results"
    for ratio, ndcg in ((1, 0.04), (2, 0.035), (8, 0.03)):
        make_record(results, "cove", metrics(0.01, **{"ndcg@10": ndcg}), ratio=ratio, backbone="SmolLM2-135M",
                    name=f"r{ratio}")
    make_record(results, "sasrec", metrics(0.01))
    speed_record(results)
    first = build(results)
    second = build(results)
    assert first == second
    [compression] = [name for name in first if name.startswith("plots/cove-compression_ratio-beauty-test-")]
    assert {"leaderboard.md", "leaderboard.csv", "README.md", "plots/speed-beauty-cpu.png"} <= set(first)
    for name in (compression, "plots/speed-beauty-cpu.png"):
        with Image.open(results / name) as image:
            assert image.format == "PNG" and image.size[0] > 300
    readme = first["README.md"].decode()
    assert f"![{Path(compression).stem}]({compression})" in readme
    assert "cove / bigrec samples/s: **80×** (medians)." in readme
    assert "| bigrec | quick-fit | fp32 | 0.5 | 0.4–0.6 | 950 | – | 64 |" in readme
    # in the order of measurement
    assert readme.index("| cove | quick-fit | fp32 | 40") < readme.index("| bigrec | quick-fit | fp32 | 0.5")


def test_committed_records_rebuild_identically(tmp_path: Path):
    """The committed tables, README and plots are generated: rebuilt from the committed records they must come
    out byte for byte as committed (a table edited by hand, or a change to the leaderboard code committed
    without running `bench leaderboard`, fails here)."""
    results = tmp_path / "results"
    shutil.copytree(REPO / "results", results)
    if not (results / "runs").exists():
        pytest.skip("no committed run records yet")
    built = build(results)
    committed_plots = {f"plots/{p.name}" for p in (REPO / "results" / "plots").glob("*.png")}
    assert {name for name in built if name.startswith("plots/")} == committed_plots
    for name, content in built.items():
        assert content == (REPO / "results" / name).read_bytes(), f"results/{name}: run `bench leaderboard`"


def test_sweeps_with_different_backbones_or_settings_stay_apart(tmp_path: Path):
    results = tmp_path / "results"
    for backbone in ("SmolLM2", "random-h64"):
        for ratio in (1, 4):
            make_record(results, "cove", metrics(0.01), ratio=ratio, backbone=backbone, name=f"{backbone}{ratio}")
    records = [(p, json.loads(p.read_text())) for p in sorted(results.rglob("*.json"))]
    sweeps = setting_sweeps(records)
    assert sorted(s.backbone for s in sweeps) == ["SmolLM2", "random-h64"]
    assert all(s.runs == [1, 1] for s in sweeps)
    written = write_plots(records, [], tmp_path / "plots")
    assert len(written) == 2 and all(p.stat().st_size > 1000 for p in written)


def test_all_zero_columns_are_not_bolded_and_nested_epochs_show(tmp_path: Path):
    results = tmp_path / "results"
    zero = {metric: 0.0 for metric in METRICS}
    bigrec = make_record(results, "bigrec", {**zero, "hr@20": 0.004}, requests=50)
    record = json.loads(bigrec.read_text())
    record["method_info"] = {"training": {"epochs_completed": 1, "stopped_by": "epochs"}}
    write_record(bigrec, record)
    make_record(results, "cove", zero, requests=50)
    table = section(write_leaderboard(results).markdown_text, "seeded subsample of 50 of 100 requests")
    assert table.count("**") == 2 and "**0.0040**" in table  # only HR@20 has a winner
    # a record made before validation loss existed was selected by NDCG: its label says so
    assert "1 epochs, stopped by epochs" in row_of(table, "bigrec[selection=ndcg]")[11]


EXPECTED = Path(__file__).resolve().parent / "expected" / "leaderboard.md"


def golden_records(results: Path) -> None:
    """Fixed records covering every column and rule the table has (rows, groups, labels, speed)."""
    sasrec = make_record(results, "sasrec", metrics(0.03, **{"hr@20": 0.10}))
    record = json.loads(sasrec.read_text())
    record["method_info"] = {"epochs_run": 3, "epochs_max": 200, "stopped_by": "max_train_minutes",
                             "examples_seen": 1_708_369, "paper_train_samples": "about 51M"}
    write_record(sasrec, record)
    make_record(results, "pop", metrics(0.01, **{"hr@20": 0.20}))
    paper = make_record(results, "cove", metrics(0.02), ratio=2, backbone="SmolLM2-135M", name="paper")
    record = json.loads(paper.read_text())
    record["config"]["cove"]["preset"] = "paper"  # an older record: the label comes from the preset
    write_record(paper, record)
    id_only = make_record(results, "cove", metrics(0.015), ratio=1, backbone="random-h64", name="idonly")
    record = json.loads(id_only.read_text())
    record["method_info"]["setting"] = "default,id-only"
    record["method_info"]["training"] = {"epochs_done": 2, "stopped_by": "epochs", "resumed_after_epoch": 1}
    record["train_seconds_total"], record["training_calls"] = 40_051.0, 2  # the train s column sums both calls
    write_record(id_only, record)
    make_record(results, "gru4rec", metrics(0.04), requests=10, seed=1)
    make_record(results, "cove", metrics(0.05), target="valid", ratio=4, backbone="SmolLM2-135M", name="valid")
    speed_record(results)
    speed = json.loads((results / "speed" / "beauty-cpu.json").read_text())
    # Untrained BIGRec ran into its 64-token cap on 75% of requests: the ratio must not be a headline.
    speed["methods"]["bigrec"]["method_info"] = {"max_new_tokens": 64, "generated_at_cap_fraction": 0.75}
    (results / "speed" / "beauty-cpu.json").write_text(json.dumps(speed, sort_keys=True))


def test_leaderboard_matches_the_committed_expected_table(tmp_path: Path):
    """The whole Markdown for fixed records, byte for byte (regenerate tests/expected/leaderboard.md
    by hand-checking a diff, never by copying the output blindly)."""
    results = tmp_path / "results"
    golden_records(results)
    assert write_leaderboard(results).markdown_text == EXPECTED.read_text(encoding="utf-8")


def test_a_corrupt_record_is_skipped_with_a_warning_unless_strict(tmp_path: Path, capsys: pytest.CaptureFixture):
    results = tmp_path / "results"
    make_record(results, "sasrec", metrics(0.03))
    bad = results / "runs" / "beauty" / "pop-broken.json"
    bad.write_text("{not json")
    markdown = write_leaderboard(results).markdown_text
    assert "| sasrec |" in markdown
    assert "pop-broken.json" in capsys.readouterr().err
    with pytest.raises(BenchError, match="pop-broken.json: not valid JSON"):
        write_leaderboard(results, strict=True)


def test_fixed_length_decoding_keeps_the_ratio_bold(tmp_path: Path):
    results = tmp_path / "results"
    speed_record(results)
    speed = json.loads((results / "speed" / "beauty-cpu.json").read_text())
    speed["methods"]["bigrec"]["generated_tokens_per_sample"] = 25.0
    speed["methods"]["bigrec"]["method_info"] = {"max_new_tokens": 64, "generated_at_cap_fraction": 0.0,
                                                 "decode_length_fixed": "25 tokens (mean_title)"}
    (results / "speed" / "beauty-cpu.json").write_text(json.dumps(speed, sort_keys=True))
    readme = build(results)["README.md"].decode()
    assert "| bigrec | quick-fit | fp32 | 0.5 | 0.4–0.6 | 950 | – | 25 (fixed length) |" in readme
    assert ("cove / bigrec samples/s: **80×** (medians; bigrec's decoding length is fixed: 25 tokens "
            "(mean_title))." in readme)


def test_other_positions_of_one_model_land_in_their_own_tables(tmp_path: Path):
    results = tmp_path / "results"
    path = make_record(results, "cove", metrics(0.03), ratio=1)
    record = json.loads(path.read_text())
    record["metrics_by_position"] = {"valid": {"metrics": metrics(0.05), "num_eval_requests": 100,
                                               "note": "same trained model; 20 of these requests also chose the epoch"}}
    write_record(path, record)
    make_record(results, "pop", metrics(0.01), target="valid")
    markdown = write_leaderboard(results).markdown_text
    valid = section(markdown, "### beauty · second-to-last item (valid) · all 100 requests")
    row = row_of(valid, "cove")
    assert row[4] == "**0.1000**" and row[9] == "valid" and "20 of these requests also chose the epoch" in row[10]
    assert row_of(section(markdown, "### beauty · last item (test) · all 100 requests"), "cove")[4] == "0.0600"


def test_speed_table_states_cove_over_tiger_with_its_fixed_decoding(tmp_path: Path):
    from bench.report.speed_tables import render_speed

    record = {
        "dataset": "beauty", "device": "cpu", "hardware": {"name": "test cpu"}, "num_prompts": 8, "repeats": 3,
        "batch_size": 1, "weights": "quick fit", "measured_in_order": ["cove", "tiger"],
        "methods": {
            "cove": {"samples_per_sec": {"median": 40.0, "min": 35.0, "max": 41.0}},
            "tiger": {"samples_per_sec": {"median": 10.0, "min": 9.0, "max": 11.0}, "generated_tokens_per_sample": 4,
                      "method_info": {"decode_length_fixed": "4 ID tokens on each of 20 beams"}},
        },
    }
    text = "\n".join(render_speed([record]))
    assert ("cove / tiger samples/s: **4×** (medians; tiger's decoding length is fixed: 4 ID tokens on each of 20 "
            "beams)." in text)
    assert "bigrec" not in text
    # No precision in the record: a CPU run from before methods said so ran as configured (the hash-neutral fp32).
    assert "| tiger | – | fp32 | 10 | 9–11 |" in text
    record["methods"]["cove"]["method_info"] = {"precision": "bf16"}
    text = "\n".join(render_speed([record]))
    assert ("cove / tiger samples/s: 4× (medians; tiger's decoding length is fixed: 4 ID tokens on each of 20 beams; "
            "not a headline: cove ran in bf16, tiger in fp32, so the ratio mixes number formats" in text)


def test_intervals_and_paired_tests_mark_what_differs_from_the_best(tmp_path: Path):
    """Three methods on the same 2,000 requests: `noisy` equals the best up to noise (bold too), `worse`
    loses 3 points of HR@10 (not bold); every row with ranks shows ±, a row without ranks does not."""
    import numpy as np

    from bench.runs.metrics import metrics_from_ranks
    from bench.store.request_ranks import save_ranks

    results = tmp_path / "results"
    rng = np.random.default_rng(0)
    requests = np.arange(2000)
    best = np.where(rng.random(2000) < 0.10, rng.integers(0, 10, 2000), rng.integers(10, 5000, 2000))
    noisy = best.copy()  # 20 hits become misses and 20 misses become hits: the same method up to noise
    noisy[rng.choice(np.flatnonzero(best < 10), 20, replace=False)] = 50
    noisy[rng.choice(np.flatnonzero(best >= 10), 20, replace=False)] = 3
    worse = best.copy()
    worse[np.flatnonzero(best < 10)[:60]] = 100  # 60 hits lost
    for name, ranks in (("best", best), ("noisy", noisy), ("worse", worse)):
        path = make_record(results, name, metrics_from_ranks(ranks), requests=100, name=name)
        record = json.loads(path.read_text())
        record["num_eval_requests"] = 2000
        record["ranks"] = save_ranks(path, {"test": (requests, ranks)})
        write_record(path, record)
    plain = make_record(results, "plain", metrics_from_ranks(worse), name="plain")
    record = json.loads(plain.read_text())
    record["num_eval_requests"] = 2000
    write_record(plain, record)
    written = write_leaderboard(results)
    table = section(written.markdown_text, "### beauty · last item (test) · all 2,000 requests")
    header = [cell.strip() for cell in table.strip().splitlines()[0].strip("|").split("|")]
    hr10 = header.index("HR@10")
    cells = {name: row_of(table, name)[hr10] for name in ("best", "noisy", "worse", "plain")}
    assert cells["best"].startswith("**") and "±" in cells["best"]
    assert cells["noisy"].startswith("**") and "±" in cells["noisy"]
    assert not cells["worse"].startswith("**") and "±" in cells["worse"]
    assert "±" not in cells["plain"] and not cells["plain"].startswith("**") and cells["plain"].endswith("†")
    csv_text = (results / "leaderboard.csv").read_text()
    head = csv_text.splitlines()[0].split(",")
    worse_line = next(line for line in csv_text.splitlines() if ",worse," in line).split(",")
    assert float(worse_line[head.index("hr@10_p_vs_best")]) < 0.05
    low, high = float(worse_line[head.index("hr@10_ci_low")]), float(worse_line[head.index("hr@10_ci_high")])
    assert low < float(worse_line[head.index("hr@10")]) < high


def ranked_record(results: Path, name: str, ranks: Any, requests: Any = None, seed: int = 0,
                  method: str | None = None) -> Path:
    """A record whose metrics are those of `ranks`, with its per-request ranks stored beside it."""
    import numpy as np

    from bench.runs.metrics import metrics_from_ranks
    from bench.store.request_ranks import save_ranks

    ranks = np.asarray(ranks)
    requests = np.arange(len(ranks)) if requests is None else np.asarray(requests)
    path = make_record(results, method or name, metrics_from_ranks(ranks), seed=seed, name=f"{name}-s{seed}")
    record = json.loads(path.read_text())
    record["num_eval_requests"] = len(ranks)
    record["ranks"] = save_ranks(path, {"test": (requests, ranks)})
    write_record(path, record)
    return path


def csv_rows(results: Path) -> dict[str, dict[str, str]]:
    import csv

    with (results / "leaderboard.csv").open() as handle:
        return {row["method"]: row for row in csv.DictReader(handle)}


def test_a_seed_averaged_row_is_tested_on_its_per_request_means(tmp_path: Path):
    """Two seeds of `cove` share a row and are the best: the other row is tested against the mean over seeds
    of each request's HR@10, the p the test computes itself from those means."""
    import numpy as np

    from bench.report.significance import paired_p_values

    results = tmp_path / "results"
    rng = np.random.default_rng(4)
    seed0 = np.where(rng.random(400) < 0.3, 0, 500)
    seed1 = seed0.copy()
    seed1[rng.choice(400, 40, replace=False)] = 0  # the second seed hits a few more
    other = np.where(rng.random(400) < 0.28, 0, 500)
    for seed, ranks in ((0, seed0), (1, seed1)):
        ranked_record(results, "cove", ranks, seed=seed)
    ranked_record(results, "sasrec", other)
    table = section(write_leaderboard(results).markdown_text, "### beauty · last item (test) · all 400 requests")
    row = csv_rows(results)
    assert row["cove"]["seed"] == "2 seeds (0, 1)" and row["cove"]["hr@10_ci_low"] != ""
    mean_hits = ((seed0 < 10).astype(float) + (seed1 < 10)) / 2
    expected = paired_p_values((other < 10).astype(float), mean_hits)[0]
    assert float(row["sasrec"]["hr@10_p_vs_best"]) == pytest.approx(expected, abs=1e-6)
    hr10 = [cell.strip() for cell in table.strip().splitlines()[0].strip("|").split("|")].index("HR@10")
    assert row_of(table, "cove")[hr10].startswith("**") and "±" in row_of(table, "cove")[hr10]
    assert row_of(table, "sasrec")[hr10].startswith("**") == (expected >= 0.05)  # bold iff not significant


def test_rows_scored_on_other_requests_are_left_untested_and_marked(tmp_path: Path):
    """Same number of requests, other request indices: identical ranks would test as p = 1 (bold), but the
    pairing is meaningless, so the row is marked untested, not bold, with no p in the CSV."""
    import numpy as np

    results = tmp_path / "results"
    ranks = np.where(np.random.default_rng(2).random(100) < 0.2, 0, 500)
    ranked_record(results, "best", np.where(np.arange(100) < 25, 0, 500))
    ranked_record(results, "shifted", ranks, requests=np.arange(100, 200))
    markdown = write_leaderboard(results).markdown_text
    table = section(markdown, "### beauty · last item (test) · all 100 requests")
    cells = row_of(table, "shifted")[3:9]
    assert all(cell.endswith(" †") and not cell.startswith("**") for cell in cells), cells
    assert "† untested: this row or the column's best has no per-request ranks" in table
    assert all(value == "" for key, value in csv_rows(results)["shifted"].items() if key.endswith("_p_vs_best"))


def test_a_subsampled_runs_other_position_stays_marked_as_a_subsample(tmp_path: Path):
    results = tmp_path / "results"
    path = make_record(results, "cove", metrics(0.01), requests=10, name="sub")
    record = json.loads(path.read_text())
    record["metrics_by_position"] = {"valid": {"metrics": metrics(0.02), "num_eval_requests": 10, "note": "same"}}
    write_record(path, record)
    markdown = write_leaderboard(results).markdown_text
    assert "### beauty · second-to-last item (valid) · seeded subsample of 10 of 100 requests" in markdown


def test_readme_shows_the_scale_sweep_with_its_out_of_memory_points(tmp_path: Path):
    from bench.report.leaderboard import write_leaderboard

    results = tmp_path / "results"
    (results / "scale").mkdir(parents=True)
    point = {"items": 1_000_000, "ratio": 16, "model": "smollm2", "item_table_bytes": 2 * 62500 * 576 * 4,
             "scoring_samples_per_sec": 12.5, "train_step_seconds": 3.25,
             "rss_mb": {"scoring_peak": 2048, "peak": 4096}}
    failed = {"items": 10_000_000, "ratio": 1, "model": "smollm2", "failed": "out of memory under the 20 GB limit: x"}
    (results / "scale" / "smollm2.json").write_text(json.dumps(
        {"points": [point, failed], "settings": {"model": "smollm2", "batch": 32, "requests": 64, "threads": 1,
                                                 "memory_limit_gb": 20.0}, "machine": {"name": "test cpu"}}))
    (results / "scale" / "smollm2.png").write_bytes(b"png")
    write_leaderboard(results)
    readme = (results / "README.md").read_text()
    assert "## Catalogue scale" in readme and "### smollm2: backbone smollm2, batch 32" in readme
    assert "| 1,000,000 | 16 | 274.7 | 12.5 | 2.00 | 3.25 | 4.00 |" in readme
    assert "| 10,000,000 | 1 | – | – | – | – | out of memory |" in readme
    assert "![scale-smollm2](scale/smollm2.png)" in readme


def test_device_column_names_the_process_count_of_a_torchrun_run():
    from bench.report.speed_tables import device_text

    assert device_text({"device": "cuda"}) == "cuda"
    assert device_text({"device": "cuda", "distributed": {"world_size": 4, "backend": "nccl"}}) == "cuda x4 (nccl)"


def configured_record(results: Path, method: str, values: dict[str, float], name: str, *, preset: str | None = None,
                      sets: tuple[str, ...] = (), seed: int = 0, setting: str | None = None,
                      dataset: str = "tiny") -> Path:
    """A record whose config section is bench.toml's defaults, plus `preset` and `--set` values, as `bench run`
    writes it."""
    from bench.config import load_config, method_config

    path = make_record(results, method, values, name=name, seed=seed, dataset=dataset)
    record = json.loads(path.read_text())
    record["config"][method] = method_config(load_config(REPO / "bench.toml"), method, preset, list(sets))[method]
    if setting:
        record["method_info"]["setting"] = setting
    write_record(path, record)
    return path


def test_rows_differing_by_set_values_are_labelled_apart_and_identical_configs_merge(tmp_path: Path):
    """Issue 23.6: `--set` values are part of the row's label; a run identical in effect (only eval_batch_size
    differs, which changes no number) is another seed of the same row, not a row of its own."""
    results = tmp_path / "results"
    configured_record(results, "sasrec_native", metrics(0.02), "default")
    configured_record(results, "sasrec_native", metrics(0.03), "lr", sets=("sasrec_native.learning_rate=3e-3",))
    configured_record(results, "sasrec_native", metrics(0.04), "lr-s1", seed=1,
                      sets=("sasrec_native.learning_rate=0.003", "sasrec_native.eval_batch_size=512"))
    configured_record(results, "sasrec_native", metrics(0.05), "paper", preset="paper",
                      sets=("sasrec_native.dropout=0.2",))
    table = section(write_leaderboard(results).markdown_text, "### tiny · last item (test) · all 100 requests")
    assert row_of(table, "sasrec_native")[0] == "sasrec_native"
    assert row_of(table, "sasrec_native[lr=3e-3]")[header_index(table, "seed")] == "2 seeds (0, 1)"
    assert row_of(table, "sasrec_native[paper,dropout=0.2]")


def header_index(table: str, column: str) -> int:
    return [cell.strip() for cell in table.strip().splitlines()[0].strip("|").split("|")].index(column)


def test_preset_overrides_read_as_overrides_and_old_records_keep_their_setting(monkeypatch: pytest.MonkeyPatch):
    """Issue 23.6: `cove[cpu_titles,id-only]` read as a contradiction. A method's setting flag that restates a
    config value is shown only where it differs from the preset, as an override; a record older than a default
    change is compared with the preset its method names (tiger's small_t5), not with today's defaults."""
    from bench.config import load_config, method_config
    from bench.report.labels import method_label

    monkeypatch.setenv("BENCH_CONFIG", str(REPO / "bench.toml"))  # the defaults method_label compares with
    config = load_config(REPO / "bench.toml")

    def record(method: str, setting: str | None, section: dict[str, Any]) -> dict[str, Any]:
        return {"method": method, "config": {method: section}, "method_info": {"setting": setting}}

    titles_off = method_config(config, "cove", "cpu_titles", ["cove.use_titles=false"])["cove"]
    assert method_label(record("cove", "cpu_titles,id-only", titles_off)) == "cove[cpu_titles,titles=off]"
    assert method_label(record("cove", "cpu,id-only", method_config(config, "cove", "cpu")["cove"])) == \
        "cove[cpu]"
    lr = method_config(config, "cove", None, ["cove.learning_rate=3e-3", "cove.max_eval_users=64"])["cove"]
    assert method_label(record("cove", "default", lr)) == "cove[default,lr=3e-3]"
    small = {key: value for key, value in method_config(config, "tiger", "small_t5")["tiger"].items()
             if key not in ("preset", "validate_every")}  # written before small_t5 was a preset
    assert method_label(record("tiger", "small_t5", small)) == "tiger[small_t5]"
    assert method_label(record("cove", "default,id-only", {"compression_ratio": 2})) == \
        "cove[default,id-only]"  # a record without the key keeps the method's own words


def test_an_undefined_metric_shows_no_interval(tmp_path: Path):
    """Issue 23.7: a metric the record leaves undefined showed "– ±0.0902": no interval without its value."""
    results = tmp_path / "results"
    path = ranked_record(results, "cove", [0, 3, 50, 500] * 25)
    record = json.loads(path.read_text())
    del record["metrics"]["ndcg@20"]
    write_record(path, record)
    ranked_record(results, "pop", [0, 500, 500, 500] * 25)
    table = section(write_leaderboard(results).markdown_text, "### beauty · last item (test) · all 100 requests")
    assert row_of(table, "cove")[header_index(table, "NDCG@20")] == "–"
    assert "±" in row_of(table, "cove")[header_index(table, "NDCG@10")]
    assert csv_rows(results)["cove"]["ndcg@20_ci_low"] == ""


def test_speed_bars_mark_quick_fit_weights_and_use_one_number_format(tmp_path: Path):
    """Issue 23.9: quick-fit bars are hatched (with a legend), every number is written as the tables write it,
    and the axis is logarithmic only where rates span more than 30x."""
    from bench.report.plots import plot_speed, speed_bars

    results = tmp_path / "results"
    speed_record(results)
    record = json.loads((results / "speed" / "beauty-cpu.json").read_text())
    record["methods"]["cove"]["samples_per_sec"] = {"median": 4266.0, "min": 4100.0, "max": 4300.0}
    record["methods"]["bigrec"]["samples_per_sec"] = {"median": 977.1, "min": 950.0, "max": 990.0}
    record["methods"]["cove"]["weights"] = {"kind": "trained"}
    bars = speed_bars(record)
    assert bars.labels == ["4,266/s", "977/s"] and not bars.log_scale
    assert bars.kinds == ["trained", "quick-fit"] and bars.hatch("trained") == "" and bars.hatch("quick-fit")
    record["methods"]["bigrec"]["samples_per_sec"] = {"median": 0.395, "min": 0.39, "max": 0.4}
    assert speed_bars(record).log_scale and speed_bars(record).labels[1] == "0.395/s"
    assert plot_speed(record, tmp_path / "speed.png").stat().st_size > 1000


def test_a_subsample_table_holds_every_full_run_restricted_to_its_requests(tmp_path: Path):
    """Issue 26: BIGRec-like on 25 seeded requests of 100 sits beside the full runs restricted to exactly
    those requests (from their per-request ranks: mean of the same requests, paired test, interval); a full
    run without ranks cannot be restricted and is not added (its twin)."""
    import numpy as np

    from bench.runs.metrics import metrics_from_ranks
    from bench.store.request_ranks import save_ranks

    results = tmp_path / "results"
    requests = np.arange(100)
    full_ranks = {"strong": np.where(requests % 2 == 0, 0, 50), "weak": np.full(100, 60)}
    for name, ranks in full_ranks.items():
        path = make_record(results, name, metrics_from_ranks(ranks), name=name)
        record = json.loads(path.read_text())
        record["ranks"] = save_ranks(path, {"test": (requests, ranks)})
        write_record(path, record)
    make_record(results, "noranks", metrics(0.01), name="noranks")
    chosen = np.arange(0, 100, 4)  # 25 requests, all even: `strong` hit every one of them
    sub_ranks = np.full(25, 3)
    path = make_record(results, "generative", metrics_from_ranks(sub_ranks), requests=25, name="generative")
    record = json.loads(path.read_text())
    record["ranks"] = save_ranks(path, {"test": (chosen, sub_ranks)})
    write_record(path, record)

    markdown = write_leaderboard(results).markdown_text
    table = section(markdown, "### beauty · last item (test) · seeded subsample of 25 of 100 requests")
    header = [cell.strip() for cell in table.strip().splitlines()[0].strip("|").split("|")]
    hr1 = header.index("HR@5")
    strong, generative = row_of(table, "strong"), row_of(table, "generative")
    assert strong[hr1].startswith("**1.0000") and "±" in strong[hr1]  # 1.0 on these 25, 0.5 on all 100
    assert "restricted to these requests" in strong[header.index("data")]
    assert generative[hr1].startswith("**1.0000")
    assert row_of(table, "weak")[hr1].startswith("0.0000") and "| noranks |" not in table
    full = section(markdown, "### beauty · last item (test) · all 100 requests")
    assert row_of(full, "strong")[hr1].startswith("**0.5000") and "| generative |" not in full


def test_a_full_run_stopped_short_joins_the_subsamples_not_converged_table(tmp_path: Path):
    """A budget- or request-stopped full run (TIGER's CPU run) is restricted to a subsample's requests too,
    but in that subsample's own "not converged" table: beside BIGRec's requests, never ranked with them."""
    import numpy as np

    from bench.runs.metrics import metrics_from_ranks
    from bench.store.request_ranks import save_ranks

    results = tmp_path / "results"
    requests = np.arange(100)
    for name, ranks, stopped in (("converged", np.full(100, 5), "early_stopping"),
                                 ("stopped", np.where(requests % 2 == 0, 0, 50), "finish_requested")):
        path = make_record(results, name, metrics_from_ranks(ranks), name=name)
        record = json.loads(path.read_text())
        record["ranks"] = save_ranks(path, {"test": (requests, ranks)})
        record["method_info"] = {"epochs_run": 3, "epochs_max": 60, "stopped_by": stopped}
        write_record(path, record)
    chosen = np.arange(0, 100, 4)
    path = make_record(results, "generative", metrics_from_ranks(np.full(25, 3)), requests=25, name="generative")
    record = json.loads(path.read_text())
    record["ranks"] = save_ranks(path, {"test": (chosen, np.full(25, 3))})
    write_record(path, record)

    markdown = write_leaderboard(results).markdown_text
    paired = section(markdown, "### beauty · last item (test) · seeded subsample of 25 of 100 requests\n")
    assert "| converged |" in paired and "| generative |" in paired and "| stopped |" not in paired
    short = section(markdown, "### beauty · last item (test) · seeded subsample of 25 of 100 requests · not "
                              "converged: training stopped by its time budget or on request")
    header = [cell.strip() for cell in short.strip().splitlines()[0].strip("|").split("|")]
    stopped = row_of(short, "stopped")
    assert stopped[header.index("HR@5")].startswith("1.0000")  # every chosen request is even: hit at rank 0
    assert "restricted to these requests" in stopped[header.index("data")] and "| generative |" not in short


def test_a_subsample_run_stopped_short_meets_the_full_runs_stopped_short(tmp_path: Path):
    """BIGRec's few-shot run, ended on request, scored 25 of 100 requests: its "not converged" table holds
    the stopped full runs restricted to its requests (TIGER's CPU run), never a converged one; without the
    subsample run's own converged table nothing was restricted to its requests at all."""
    import numpy as np

    from bench.runs.metrics import metrics_from_ranks
    from bench.store.request_ranks import save_ranks

    results = tmp_path / "results"
    requests, chosen = np.arange(100), np.arange(0, 100, 4)
    runs = (("converged", requests, np.full(100, 5), "early_stopping"),
            ("stopped", requests, np.where(requests % 2 == 0, 0, 50), "finish_requested"),
            ("generative", chosen, np.full(25, 3), "finish_requested"))
    for name, scored, ranks, stopped in runs:
        path = make_record(results, name, metrics_from_ranks(ranks), requests=len(scored), name=name)
        record = json.loads(path.read_text())
        record["ranks"] = save_ranks(path, {"test": (scored, ranks)})
        record["method_info"] = {"epochs_run": 3, "epochs_max": 60, "stopped_by": stopped}
        write_record(path, record)

    markdown = write_leaderboard(results).markdown_text
    assert "### beauty · last item (test) · seeded subsample of 25 of 100 requests\n" not in markdown
    short = section(markdown, "### beauty · last item (test) · seeded subsample of 25 of 100 requests · not "
                              "converged: training stopped by its time budget or on request")
    header = [cell.strip() for cell in short.strip().splitlines()[0].strip("|").split("|")]
    stopped = row_of(short, "stopped")
    assert stopped[header.index("HR@5")].startswith("**1.0000") and "±" in stopped[header.index("HR@5")]
    assert "restricted to these requests" in stopped[header.index("data")]
    assert "| generative |" in short and "| converged |" not in short


def test_a_partial_last_epoch_is_shown_as_the_fraction_trained():
    """A budget that stops epoch 2 after 160 of 22,363 samples trained 1.01 epochs; '2/5 epochs' would claim twice
    that. Its twin: a run whose epochs all finished keeps the whole count."""
    info = {"epochs_run": 2, "epochs_max": 5, "stopped_by": "max_train_minutes", "train_examples": 22_363}
    cut = {"method_info": {**info, "examples_seen": 22_523}}
    whole = {"method_info": {**info, "examples_seen": 44_726, "stopped_by": "epochs"}}
    assert training_text(cut) == "1.01/5 epochs (epoch 2 partial), stopped by max_train_minutes"
    assert training_text(whole) == "2/5 epochs, stopped by epochs"
    lifecycle = {"method_info": {**info, "epochs_trained": 1.3333}}  # any method: the share of its steps
    assert training_text(lifecycle) == "1.33/5 epochs (epoch 2 partial), stopped by max_train_minutes"
    reloaded = {"method_info": {**cut["method_info"], "epochs_trained": 2}}  # cut before the fraction was kept
    assert training_text(reloaded) == training_text(cut)
    assert demo_training_text({**cut, "max_train_minutes": 4.5}) == "CUT 4.5 min, 1.01/5 ep"  # the demo's column
