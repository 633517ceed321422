"""Shared fixtures: the real-data dir (skip with a reason when absent) and isolated paths."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    candidate = Path(os.environ.get("BENCH_DATA_DIR", REPO.parent / "shared" / "data"))
    return candidate if (candidate / "amazon").exists() else None


@pytest.fixture
def real_data_dir() -> Path:
    data_dir = shared_data_dir()
    if data_dir is None:
        pytest.skip("real Amazon data not found: set BENCH_DATA_DIR to the shared data folder")
    return data_dir


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Results and cache in a temp folder so tests never touch the repo's results/."""
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def tiny_model_threads() -> int:
    """torch threads for tiny-model tests: 1 by default (a tiny model gains nothing from more, and on a
    shared 2-core machine spinning threads made them ten times slower); BENCH_TEST_THREADS=2 reruns the
    learning tests on another floating-point path, as their robustness check."""
    return int(os.environ.get("BENCH_TEST_THREADS", "1"))



def start_fitting_run(isolated: Path) -> subprocess.Popen:
    """`bench run` of a plugin whose fit() sleeps for a minute, returned once it is inside fit(): for
    tests that interrupt a training (Ctrl-C, SIGTERM) and check what is left behind."""
    import signal
    import sys
    import time

    repo = Path(__file__).resolve().parent.parent
    plugin = isolated / "slowplugin.py"
    plugin.write_text("import time\nfrom bench.method import Method\n"
                      "class Slow(Method):\n    name = 'slow'\n"
                      "    def fit(self, dataset):\n        print('fitting', flush=True)\n        time.sleep(60)\n"
                      "    def score(self, users, histories):\n        return None\n"
                      "METHODS = {'slow': 'slowplugin:Slow'}\n")
    config = isolated / "bench.toml"
    config.write_text((repo / "bench.toml").read_text().replace('modules = ["methods"]',
                                                                'modules = ["methods", "slowplugin"]')
                      + "\n[slow]\n")
    env = {**os.environ, "BENCH_CONFIG": str(config), "PYTHONPATH": f"{isolated}{os.pathsep}{repo}",
           "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", "--method", "slow", "--dataset", "tiny"],
                               cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               # a runner started in the background (nohup, &) ignores SIGINT, and children
                               # inherit that: give the CLI the default a user's terminal gives it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert process.stdout is not None
    deadline = time.time() + 60
    while "fitting" not in process.stdout.readline():
        assert time.time() < deadline and process.poll() is None, process.stderr.read() if process.stderr else ""
    return process


def committed_file(folder: Path, role: str, state_name: str = "progress.json") -> Path | None:
    """The file of `role` that a work dir's committed state names (where is the best?)."""
    from bench.train.checkpoints import CheckpointDir

    store = CheckpointDir(folder, state_name=state_name)
    return store.path(store.read_state(), role)
