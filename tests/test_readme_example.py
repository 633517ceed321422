"""The README's "Your own data" example runs exactly as written, in a scratch copy of its files."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def example_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- byo-example:start -->", 1)[1].split("<!-- byo-example:end -->", 1)[0]
    lines = [line for line in block.splitlines() if line.startswith(".venv/bin/bench ")]
    return [shlex.split(line)[1:] for line in lines]


def test_the_readme_example_goes_from_raw_files_to_a_leaderboard_row(tmp_path: Path):
    commands = example_commands()
    assert len(commands) == 5
    shutil.copytree(REPO / "datasets" / "fixtures" / "byo", tmp_path / "datasets" / "fixtures" / "byo")
    env = {**os.environ, "PYTHONPATH": str(REPO), "BENCH_RESULTS_DIR": str(tmp_path / "results"),
           "BENCH_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}  # torch: 1 thread, as tests run
    env.pop("BENCH_DATASETS_DIR", None)
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "bench.cli", *command], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stderr[-2000:]}"
    card = (tmp_path / "my_cards" / "shop.toml").read_text()
    assert 'text_fields = ["brand"]' in card and "users = 40" in card
    runs = (tmp_path / "results" / "runs" / "shop").glob("*.json")
    records = {p.name.split("-")[0]: json.loads(p.read_text()) for p in runs}
    assert set(records) == {"pop", "sasrec_native", "tiger"}
    assert records["tiger"]["method_info"]["semantic_ids"]["text_field_coverage"]["brand"] == 1.0
    losses = records["tiger"]["method_info"]["epoch_losses"]
    assert losses[-1] < 0.5 * losses[0]  # the example's settings let TIGER learn (the defaults' warm-up did not)
    leaderboard = (tmp_path / "results" / "leaderboard.md").read_text()
    assert "shop" in leaderboard and "| sasrec_native" in leaderboard
