"""One commit point per epoch: a kill while an epoch's files are written leaves the previous epoch's state
whole, and a finished commit names only files that exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import committed_file

from bench.train import checkpoints
from bench.train.checkpoints import CheckpointDir


def writer(text: str):  # noqa: ANN201 - a file writer for CheckpointDir.commit
    return lambda path: path.write_text(text)


def test_a_kill_before_the_state_is_replaced_leaves_the_previous_epoch_whole(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    store = CheckpointDir(tmp_path)
    store.commit({"epochs_done": 1}, "e0001", {"last": (".pt", writer("one")), "best": (".pt", writer("best1"))})

    def killed(path: Path, text: str) -> None:
        raise KeyboardInterrupt  # the moment after epoch 2's files, before its state

    monkeypatch.setattr(checkpoints, "atomic_write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        store.commit({"epochs_done": 2}, "e0002", {"last": (".pt", writer("two"))})
    monkeypatch.undo()
    state = store.read_state()
    assert state["epochs_done"] == 1 and store.path(state, "last").read_text() == "one"
    assert store.path(state, "best").read_text() == "best1"
    # Epoch 2 again (as a resumed run would): committed, the earlier "last" deleted, "best" kept.
    store.commit({"epochs_done": 2}, "e0002", {"last": (".pt", writer("two"))})
    assert committed_file(tmp_path, "last").read_text() == "two" and committed_file(tmp_path, "best").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-e0001.pt", "last-e0002.pt", "progress.json"]
    assert json.loads((tmp_path / "progress.json").read_text())["files"] == {"last": "last-e0002.pt",
                                                                           "best": "best-e0001.pt"}


def test_a_work_dir_whose_state_names_no_files_is_refused_in_one_line(tmp_path: Path):
    """A work dir from before the state named its files (fixed names, no "files" key) is not guessed at."""
    import pytest
    import torch

    from bench.errors import BenchError
    from bench.train.lifecycle import EpochTrainer, LoopSettings

    (tmp_path / "last.pt").write_text("old")
    (tmp_path / "progress.json").write_text(json.dumps({"epochs_done": 4, "fingerprint": {"run": 1}}))
    model = torch.nn.Linear(2, 1)
    loop = EpochTrainer(model, torch.optim.SGD(model.parameters(), lr=0.1), LoopSettings("toy", 5, 0),
                        work_dir=tmp_path, device="cpu", validate=None, log=lambda _: None, fingerprint={"run": 1})
    with pytest.raises(BenchError, match=r"cannot resume from it \(its state names no checkpoint file\); delete it"):
        loop.train(lambda epoch: [[0]], lambda rows: (model(torch.ones(1, 2)).sum(), 1))


def test_an_atomic_write_that_writes_nothing_keeps_the_old_file(tmp_path: Path):
    """A writer that returns without writing (RecBole's _save_checkpoint off its main rank) must not
    replace a good file with an empty one, and leaves no temp file behind."""
    from bench.atomic import atomic_write, atomic_write_text

    target = tmp_path / "last.pt"
    atomic_write(target, lambda path: path.write_bytes(b"weights"))
    with pytest.raises(FileNotFoundError):
        atomic_write(target, lambda path: None)
    assert target.read_bytes() == b"weights" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    atomic_write_text(tmp_path / "record.json", "{}")
    assert (tmp_path / "record.json").stat().st_mode & 0o777 == 0o644  # results are read by others


def test_a_killed_checkpoint_write_leaves_no_temp_file_once_written_again(tmp_path: Path):
    store = CheckpointDir(tmp_path)
    (tmp_path / ".last-e0002.pt.k1ll3d.tmp").write_text("half a checkpoint")  # SIGKILL mid-write
    store.commit({"epochs_done": 2}, "e0002", {"last": (".pt", writer("two"))})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-e0002.pt", "progress.json"]
