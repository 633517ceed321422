"""The speed-accuracy frontier: which accuracy row and which speed entry make each method's point."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.report.frontier import frontier_panels, frontier_points, frontier_views, render_frontier, size_text
from bench.report.frontier_rows import Scope, best_rows, frontier_scopes, scope_rows


def run(method: str, ndcg: float, *, target: str = "test", masked: bool = False, subsample: bool = False,
        stopped_by: str = "early_stopping", params: int = 1000, lr: float = 0.1, seed: int = 0) -> dict[str, Any]:
    return {"method": method, "dataset": "toy", "eval_target": target, "mask_history": masked, "seed": seed,
            "subsample": {"eval_requests": 10, "eval_requests_total": 100} if subsample else None,
            "metrics": {"ndcg@10": ndcg}, "config": {method: {"lr": lr}},
            "method_info": {"stopped_by": stopped_by, "parameters": params}}


def entry(rate: float, weights: dict[str, Any] | None = None, tokens: float | None = None,
          info: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"samples_per_sec": {"median": rate, "min": rate, "max": rate}, "weights": weights or {"kind": "quick_fit"},
            "generated_tokens_per_sample": tokens, "method_info": info or {}}


def speed(methods: dict[str, Any], batch: int = 1, created: str = "2026-01-01", device: str = "cpu",
          label: str | None = None) -> dict[str, Any]:
    return {"dataset": "toy", "device": device, "batch_size": batch, "created": created, "methods": methods,
            "measured_in_order": list(methods), "label": label}


RECORDS = [
    (Path("a-1.json"), run("a", 0.030, lr=0.5)),              # another setting of a
    (Path("a-2.json"), run("a", 0.040)),                      # a's best main-table row: two seeds, mean .045
    (Path("a-7.json"), run("a", 0.050, seed=1)),
    (Path("a-3.json"), run("a", 0.090, masked=True)),         # masked: another protocol
    (Path("a-4.json"), run("a", 0.080, subsample=True)),      # a subsample
    (Path("a-5.json"), run("a", 0.070, stopped_by="max_train_minutes")),  # cut by its budget
    (Path("a-6.json"), run("a", 0.060, target="valid")),      # another position
    (Path("a-8.json"), {**run("a", 0.065), "weights_from": {"config_hash": "2"}}),  # a-2's weights re-scored
    (Path("gen-1.json"), run("gen", 0.020, params=5_000_000)),
    (Path("capped-1.json"), run("capped", 0.010)),
    (Path("masked-1.json"), run("masked", 0.010, masked=True)),  # only re-scored unmasked: that row counts
    (Path("masked-2.json"), {**run("masked", 0.008), "weights_from": {"config_hash": "1"}}),
]


def test_best_rows_take_only_main_table_records():
    best = best_rows(RECORDS, "toy")
    assert {m: [p.name for p in paths] for m, (paths, _, _) in best.items()} == {
        "a": ["a-2.json", "a-7.json"], "gen": ["gen-1.json"], "capped": ["capped-1.json"],
        "masked": ["masked-2.json"]}
    assert best["a"][2] == pytest.approx(0.045)  # seeds merged, as the main table merges them
    assert best_rows(RECORDS, "other") == {}


def test_each_point_uses_a_speed_that_tells_a_trained_models_speed():
    quick = speed({"a": entry(999.0),
                   # a fixed decoding length (semantic IDs): its speed does not follow the weights
                   "gen": entry(3.0, tokens=4, info={"decode_length_fixed": "4 ID tokens on each of 20 beams"}),
                   # decoding that stops at EOS, timed with quick-fit weights: unusable
                   "capped": entry(0.5, tokens=60.0, info={"max_new_tokens": 64}),
                   "unrecorded": entry(10.0)})
    points = {p.method: p for p in frontier_points(RECORDS, quick)}
    assert set(points) == {"a", "gen"}  # capped: no usable speed; unrecorded: no main-table row
    assert points["a"].samples_per_sec == 999.0 and points["a"].weights == "quick-fit"
    assert points["a"].record == "toy/a-2.json (+1 seeds)" and points["a"].ndcg10 == pytest.approx(0.045)
    assert points["gen"].samples_per_sec == 3.0 and points["gen"].parameters == 5_000_000
    assert size_text(points["gen"].parameters) == "5M" and points["gen"].speed_record == "toy-cpu"


def test_weights_of_another_run_or_setting_are_said_or_refused():
    other_run = speed({"a": entry(40.0, {"kind": "trained", "record": "runs/toy/a-1.json"})})
    assert frontier_points(RECORDS, other_run)[0].weights == "trained, another run"  # a-1 is another setting
    other_setting = speed({"gen": entry(3.0, tokens=4, info={"decode_length_fixed": "4 ID tokens on each of 20 beams",
                                                             "setting": "small"})})
    assert frontier_points(RECORDS, other_setting) == []  # quick-fit weights of another setting: another model
    fixed = {"decode_length_fixed": "4 ID tokens on each of 20 beams"}
    bf16_row = [(Path("gen-1.json"), {**run("gen", 0.020), "method_info": {"stopped_by": "epochs",
                                                                         "precision": "bf16"}})]
    timed = {p: speed({"gen": entry(3.0, tokens=4, info={**fixed, "precision": p})}) for p in ("fp32", "bf16")}
    assert frontier_points(bf16_row, timed["fp32"]) == []  # quick-fit fp32 in place of a bf16 model: another model
    assert [p.samples_per_sec for p in frontier_points(bf16_row, timed["bf16"])] == [3.0]
    # A CPU record from before methods said their precision ran as configured (fp32); so did another run.
    old_fp32 = [(Path("gen-1.json"), {**run("gen", 0.020), "device": "cpu", "config": {"gen": {"precision": "fp32"}}})]
    assert frontier_points(old_fp32, timed["bf16"]) == []
    assert [p.samples_per_sec for p in frontier_points(old_fp32, timed["fp32"])] == [3.0]
    another = {p: speed({"gen": entry(3.0, {"kind": "trained", "record": "runs/toy/gen-9.json"}, tokens=4,
                                      info={**fixed, "precision": p})}) for p in ("fp32", "bf16")}
    assert frontier_points(bf16_row, another["fp32"]) == []  # another run's fp32 weights: another model
    assert [p.weights for p in frontier_points(bf16_row, another["bf16"])] == ["trained, another run"]


def test_a_panel_takes_one_speed_run_never_a_mix():
    trained = {"kind": "trained", "record": "runs/toy/a-2.json"}
    fixed = {"decode_length_fixed": "4 ID tokens on each of 20 beams"}
    one = speed({"a": entry(40.0, trained)}, created="2027-01-01")
    both = speed({"a": entry(30.0, trained), "gen": entry(3.0, tokens=4, info=fixed)}, created="2026-01-01")
    both_quick = speed({"a": entry(20.0), "gen": entry(2.0, tokens=4, info=fixed)}, created="2028-01-01")
    b32 = speed({"a": entry(7.0, trained)}, batch=32)
    gpu = speed({"a": entry(8.0, trained)}, device="cuda:0")
    panels = frontier_panels(RECORDS, [one, both, both_quick, b32, gpu], "toy", "cpu")
    assert [size for size, _, _ in panels] == [1, 32]
    # Batch 1: the run placing both methods, and of those the one with trained weights, although older.
    assert panels[0][1] is both and [p.samples_per_sec for p in panels[0][2]] == [30.0, 3.0]
    assert [p.samples_per_sec for p in panels[1][2]] == [7.0]
    assert [p.samples_per_sec for _, _, ps in frontier_panels(RECORDS, [gpu], "toy", "cuda") for p in ps] == [8.0]
    assert frontier_views([one, gpu]) == [("toy", "cpu"), ("toy", "cuda")]


def test_leaderboard_draws_and_tabulates_the_frontier(tmp_path: Path):
    from bench.report.plots import frontier_plots

    records = [speed({"a": entry(40.0, {"kind": "trained", "record": "runs/toy/a-2.json"}),
                      "gen": entry(3.0, tokens=4, info={"decode_length_fixed": "4 ID tokens on each of 20 beams"})})]
    lines = "\n".join(render_frontier(RECORDS, records))
    assert "## Speed-accuracy frontier" in lines and "### toy · cpu · batch 1" in lines
    assert "| a | 1K | 0.0450 | 40 | trained | toy/a-2.json (+1 seeds) |" in lines
    assert "| gen | 5M | 0.0200 | 3 | quick-fit | toy/gen-1.json |" in lines
    assert "Speed record `speed/toy-cpu-trained.json`" in lines
    written = frontier_plots(RECORDS, records, tmp_path)
    assert [p.name for p in written] == ["frontier-toy-cpu.png"] and written[0].stat().st_size > 1000
    again = frontier_plots(RECORDS, records, tmp_path / "again")
    assert again[0].read_bytes() == written[0].read_bytes()  # same records, same bytes
    assert render_frontier(RECORDS, [speed({"capped": entry(0.5, tokens=60.0, info={"max_new_tokens": 64})})]) == []


def test_a_model_scored_on_a_subsample_gets_a_frontier_with_the_others_restricted_to_its_requests(tmp_path: Path):
    from bench.store.request_ranks import save_ranks

    def saved(name: str, record: dict[str, Any], index: list[int], ranks: list[int]) -> tuple[Path, dict[str, Any]]:
        path = tmp_path / name
        record["ranks"] = save_ranks(path, {"test": (np.array(index), np.array(ranks))})
        return path, record

    sub = {"eval_requests": 4, "eval_requests_total": 10, "eval_seed": 0}
    records = [
        saved("a-1.json", run("a", 0.3), list(range(10)), [0, 0, 0] + [100] * 7),  # hits 0-2: .3 on all ten
        saved("part-1.json", run("part", 0.5), list(range(7)), [0] * 7),          # never scored requests 7-9
        saved("gen-1.json", {**run("gen", 0.25), "subsample": sub}, [0, 1, 7, 8], [0, 100, 100, 100]),
        saved("few-1.json", {**run("few", 0.9), "subsample": {**sub, "train": {"users": 3}}}, [0, 1, 7, 8], [0] * 4),
        # a has a main-table row: on the subsample that model stands restricted, not this other run of a
        saved("a-2.json", {**run("a", 0.9), "subsample": sub}, [0, 1, 7, 8], [0] * 4),
        # trained on some users, though its record does not say so in `subsample`: its settings do
        saved("some-1.json", {**run("some", 0.9), "subsample": sub, "config": {"some": {"max_train_users": 3}}},
              [0, 1, 7, 8], [0] * 4),
    ]
    scopes = frontier_scopes(records, "toy")
    assert scopes == [Scope(), Scope(4, 10, 0)]  # few-1 was trained on 3 users: no full-data model
    assert set(scope_rows(records, "toy", scopes[0])) == {"a", "part"}  # every request: the main table's rows
    rows = scope_rows(records, "toy", scopes[1])
    assert set(rows) == {"a", "gen"}
    assert rows["a"][2] == pytest.approx(0.5) and rows["a"][3]  # requests 0, 1 hit, 7, 8 miss: .5, not its .3
    assert rows["gen"][2] == pytest.approx(0.25) and not rows["gen"][3]
    fixed = {"decode_length_fixed": "4 ID tokens on each of 20 beams"}
    both = speed({"a": entry(40.0), "gen": entry(3.0, tokens=4, info=fixed)})
    [(size, _, points)] = frontier_panels(records, [both, speed({"a": entry(50.0)}, created="2027")], "toy", "cpu",
                                          scopes[1])
    assert size == 1 and {p.method: (p.ndcg10, p.record) for p in points} == {
        "a": (pytest.approx(0.5), "toy/a-1.json, restricted"), "gen": (0.25, "toy/gen-1.json")}
    # A speed run without the subsample's own method makes no subsample frontier, however many it places.
    assert frontier_panels(records, [speed({"a": entry(40.0)})], "toy", "cpu", scopes[1]) == []
    lines = render_frontier(records, [both])
    assert "### toy · cpu · batch 1 · seeded subsample of 4 of 10 requests" in lines
    assert any("gets a frontier of that subsample" in line for line in lines)
    from bench.report.plots import frontier_plots

    assert [p.name for p in frontier_plots(records, [both], tmp_path / "plots")] == ["frontier-toy-cpu.png",
                                                                               "frontier-toy-cpu-sub4.png"]
    assert "| gen | 1K | 0.2500 | 3 | quick-fit | toy/gen-1.json |" in lines
