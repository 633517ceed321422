"""The one training lifecycle (bench.train.lifecycle): a run killed inside an epoch resumes at the step after
its last commit and ends with the uninterrupted run's weights (same batches, same dropout); its twin, a
resume that starts the epoch over, does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.train.lifecycle import EpochTrainer, LoopSettings, training_facts

EPOCHS, BATCHES = 3, 6


def train(work_dir: Path, kill_at: int | None = None, logs: list[str] | None = None,
          nan_at: int | None = None, inf_grad_at: int | None = None,
          models: list[torch.nn.Module] | None = None,
          fingerprint: dict[str, Any] | None = None, resume_only: bool = False) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    if models is not None:
        models.append(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    settings = LoopSettings("toy", EPOCHS, patience=0, seed=3, commit_every_seconds=1e-9, resume_only=resume_only)
    data = torch.randn(BATCHES * 4, 4, generator=torch.Generator().manual_seed(1))
    target = data.sum(dim=1, keepdim=True)
    steps: list[int] = []

    def epoch_batches(epoch: int) -> list[list[int]]:
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(epoch)).tolist()
        return [order[i:i + 4] for i in range(0, len(order), 4)]

    def step(rows: list[int]) -> tuple[torch.Tensor, int]:
        steps.append(1)
        if kill_at is not None and len(steps) == kill_at:
            raise KeyboardInterrupt
        loss = torch.nn.functional.mse_loss(model(data[rows]), target[rows])
        if len(steps) == inf_grad_at:  # a finite loss (+ 0) whose gradient is inf: sqrt's slope at 0
            weight = model[0].weight
            loss = loss + torch.sqrt(weight - weight.detach()).sum()
        return (loss * float("nan") if len(steps) == nan_at else loss), len(rows)

    loop = EpochTrainer(model, optimizer, settings, work_dir=work_dir, device="cpu", validate=None,
                        log=(logs if logs is not None else []).append, fingerprint=fingerprint or {"toy": 1})
    loop.train(epoch_batches, step)
    return {k: v.clone() for k, v in model.state_dict().items()}


def killed_then_resumed(work_dir: Path, restart_epoch: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    with pytest.raises(KeyboardInterrupt):
        train(work_dir, kill_at=BATCHES + 3)  # the third step of epoch 2: two of its steps committed
    if restart_epoch:  # what a loop that only resumes at epoch boundaries would do
        state_file = work_dir / "progress.json"
        state = json.loads(state_file.read_text())
        state.update(steps_done_in_epoch=0, epoch_loss_sum=0.0, epoch_loss_weight=0.0)
        state_file.write_text(json.dumps(state))
    logs: list[str] = []
    return train(work_dir, logs=logs), logs


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_run_killed_inside_an_epoch_ends_with_the_uninterrupted_weights(tmp_path: Path):
    straight = train(tmp_path / "straight")
    resumed, logs = killed_then_resumed(tmp_path / "killed", restart_epoch=False)
    assert any("resumed after epoch 1, step 2 of epoch 2" in line for line in logs), logs
    assert same(straight, resumed)
    state = json.loads((tmp_path / "killed" / "progress.json").read_text())
    assert state["optimizer_steps"] == EPOCHS * BATCHES and state["examples_seen"] == EPOCHS * BATCHES * 4
    assert state["finished"] and state["steps_done_in_epoch"] == 0 and len(state["epoch_losses"]) == EPOCHS


def test_twin_restarting_the_epoch_does_not_reach_the_same_weights(tmp_path: Path):
    straight = train(tmp_path / "straight")
    restarted, _ = killed_then_resumed(tmp_path / "killed", restart_epoch=True)
    assert not same(straight, restarted)


def test_a_commit_inside_an_epoch_waits_for_every_rank_s_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Under torchrun every rank must join a commit (sharded weights are gathered), so the 'time to commit'
    verdict is the ranks' shared one: when the shared verdict says no, no rank commits inside the epoch
    (only at epoch ends); with the verdict left alone (the twin), this one-rank run commits after each step."""
    import bench.train.lifecycle as lifecycle

    commits: list[str] = []
    real_commit = lifecycle.TrainingLoop.commit

    def counting(self: Any, best: bool, tag: str) -> None:
        commits.append(tag)
        real_commit(self, best, tag)

    monkeypatch.setattr(lifecycle.TrainingLoop, "commit", counting)
    train(tmp_path / "shared")
    assert any("s" in tag for tag in commits)  # e0000s000001, ... inside the epochs
    commits.clear()
    real_sums = lifecycle.sums_over_ranks
    calls: list[int] = []

    def vetoed(values: list[float]) -> list[float]:  # another rank's clock: not yet time to commit
        calls.append(len(values))
        real = real_sums(values)
        return [*real[:4], 0.0, *real[5:]]

    monkeypatch.setattr(lifecycle, "sums_over_ranks", vetoed)
    train(tmp_path / "vetoed")
    assert commits == [f"e{epoch:04d}" for epoch in range(1, EPOCHS + 1)]
    # loss, weight, examples, both clock verdicts, the finish request and the gradients' verdict: one collective a step
    assert calls and set(calls) == {7}


def finish_run(work_dir: Path, request_at: int | None,
               kill_at: int | None = None) -> tuple[dict[str, Any], int, list[str]]:
    """Train the toy with a validator; `request_at`: the step during which `bench run --finish` is asked,
    `kill_at`: the step at which the process dies."""
    from bench.train.lifecycle import request_finish

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    settings = LoopSettings("toy", EPOCHS, patience=0, seed=3, validate_every=2, commit_every_seconds=1e-9)
    data = torch.randn(BATCHES * 4, 4, generator=torch.Generator().manual_seed(1))
    steps: list[int] = []

    def step(rows: list[int]) -> tuple[torch.Tensor, int]:
        steps.append(1)
        if len(steps) == kill_at:
            raise KeyboardInterrupt
        if len(steps) == request_at:
            request_finish(work_dir, work_dir / 'record.json')
        return model(data[rows]).pow(2).mean(), len(rows)

    logs: list[str] = []
    loop = EpochTrainer(model, optimizer, settings, work_dir=work_dir, device="cpu", validate=lambda: -len(steps),
                        log=logs.append, fingerprint={"toy": 1})
    batches = [list(range(i, i + 4)) for i in range(0, BATCHES * 4, 4)]
    return loop.train(lambda epoch: batches, step), len(steps), logs


@pytest.mark.parametrize("requested", [True, False])
def test_a_finish_request_stops_a_running_training_after_its_current_step(requested: bool, tmp_path: Path):
    """`bench run --finish` while another process trains: that process stops after the step it is in,
    validates the partial epoch as a time budget would, and records stopped_by finish_requested. Twin:
    without the request the same loop trains all its epochs."""
    state, steps, logs = finish_run(tmp_path, request_at=BATCHES + 2 if requested else None)
    if requested:
        assert steps == BATCHES + 2 and state["optimizer_steps"] == BATCHES + 2
        assert state["finished"] and state["stopped_by"] == "finish_requested"
        assert state["epochs_done"] == 2 and state["validated_epochs"] == [2]
        assert any("partial epoch: finish requested" in line for line in logs), logs
        assert not (tmp_path / "finish.request").exists()  # honoured: a later run starts clean
        assert state["cut_epoch_fraction"] == pytest.approx(2 / BATCHES)  # epoch 2 ran 2 of its 6 steps
        assert training_facts(state, EPOCHS, 0)["epochs_trained"] == pytest.approx(1 + 2 / BATCHES, abs=1e-4)
    else:
        assert steps == EPOCHS * BATCHES and state["stopped_by"] == "epochs"
        assert state["cut_epoch_fraction"] is None and training_facts(state, EPOCHS, 0)["epochs_trained"] == EPOCHS


def test_a_finish_request_ends_a_stopped_run_without_another_step(tmp_path: Path):
    """A run killed inside its second epoch, then finished: no step is taken, the committed steps of epoch 2
    count as a partial epoch and are validated, and the best validated epoch is kept."""
    from bench.train.lifecycle import request_finish

    with pytest.raises(KeyboardInterrupt):
        finish_run(tmp_path, request_at=None, kill_at=BATCHES + 3)
    request_finish(tmp_path, tmp_path / 'record.json')
    state, steps, logs = finish_run(tmp_path, request_at=None)
    assert steps == 0 and state["optimizer_steps"] == BATCHES + 2
    assert state["stopped_by"] == "finish_requested" and state["epochs_done"] == 2
    assert state["validated_epochs"] == [2] and state["best_epoch"] == 2
    assert state["cut_epoch_fraction"] == pytest.approx(2 / BATCHES)  # the 2 steps committed before the kill
    assert any("partial epoch: finish requested" in line for line in logs), logs


def test_finishing_a_run_that_never_trained_is_refused(tmp_path: Path):
    from bench.errors import BenchError
    from bench.train.lifecycle import request_finish

    with pytest.raises(BenchError, match="no committed training"):
        request_finish(tmp_path / "nothing", tmp_path / "record.json")
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("nan_at", [None, BATCHES + 2])
def test_a_non_finite_loss_stops_training_at_that_step_and_keeps_the_last_commit(nan_at: int | None,
                                                                                 tmp_path: Path):
    """A NaN loss (CoVE's first CUDA run: SDPA's backward on left padding) must not train on for minutes and
    then fail at validation: the loop stops at that step with one line, and what was committed before stays."""
    from bench.errors import BenchError

    if nan_at is None:  # the twin: the same run without the NaN finishes
        train(tmp_path)
        assert json.loads((tmp_path / "progress.json").read_text())["finished"]
        return
    with pytest.raises(BenchError, match=r"toy: non-finite training gradients at epoch 2, optimizer step 2"):
        train(tmp_path, nan_at=nan_at)
    state = json.loads((tmp_path / "progress.json").read_text())
    assert state["epochs_done"] == 1 and state["steps_done_in_epoch"] == 1 and not state["finished"]
    assert all(v == v for v in state["epoch_losses"]) and state["epoch_loss_sum"] == state["epoch_loss_sum"]


def test_a_step_with_non_finite_gradients_is_not_applied(tmp_path: Path):
    """The failure CoVE met on CUDA: the loss is finite, the gradients are not. The step must not reach the
    weights (else they are NaN and the loss shows it only a step later, maybe after a commit)."""
    from bench.errors import BenchError

    models: list[torch.nn.Module] = []
    with pytest.raises(BenchError, match=r"toy: non-finite training gradients at epoch 1, optimizer step 3"):
        train(tmp_path, inf_grad_at=3, models=models)
    assert all(torch.isfinite(p).all() for p in models[0].parameters())
    assert json.loads((tmp_path / "progress.json").read_text())["steps_done_in_epoch"] == 2


def test_twin_an_optimizer_stepping_on_non_finite_gradients_ruins_the_weights(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    """Without the check (the step always taken) the same run ends with non-finite weights."""
    import bench.train.lifecycle as lifecycle
    from bench.errors import BenchError

    def always(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], max_grad_norm: float | None = None):
        optimizer.step()
        return True

    monkeypatch.setattr(lifecycle, "step_if_finite", always)
    models: list[torch.nn.Module] = []
    with pytest.raises(BenchError, match=r"toy: non-finite training loss \(nan\) at epoch 1, optimizer step 4"):
        train(tmp_path, inf_grad_at=3, models=models)  # caught a step late, by the loss
    assert not all(torch.isfinite(p).all() for p in models[0].parameters())


def test_a_work_dir_trained_under_another_setup_is_refused_and_kept(tmp_path: Path):
    """Starting afresh would delete the committed checkpoints at the first commit: hours of training that the
    setup which made them (another CPU's resolved precision, say) could still resume. The run stops instead,
    naming what differs, and every committed file is left as it was."""
    from bench.errors import BenchError

    train(tmp_path, fingerprint={"toy": 1, "training": {"precision": "fp32"}})
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(BenchError, match=rf"holds {EPOCHS} epochs \({EPOCHS * BATCHES} optimizer steps\).*"
                                         r"precision 'fp32' there, 'bf16' here.*--force"):
        train(tmp_path, fingerprint={"toy": 1, "training": {"precision": "bf16"}})
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_twin_an_untrained_work_dir_of_another_setup_starts_afresh(tmp_path: Path):
    """Nothing trained, nothing to keep: the run trains from scratch over it."""
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "progress.json").write_text(json.dumps({"epochs_done": 0, "optimizer_steps": 0,
                                                        "fingerprint": {"toy": 0}, "files": {}}))
    logs: list[str] = []
    train(tmp_path, logs=logs)
    assert any("untrained; starting afresh" in line for line in logs), logs
    assert json.loads((tmp_path / "progress.json").read_text())["optimizer_steps"] == EPOCHS * BATCHES


def test_loading_a_run_trained_under_another_setup_finds_nothing_to_load(tmp_path: Path):
    """`bench evaluate` loads finished runs only (resume_only): another setup's dir is not its run, and is kept."""
    from bench.errors import BenchError

    train(tmp_path, fingerprint={"toy": 1})
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    logs: list[str] = []
    with pytest.raises(BenchError, match="no finished toy training"):
        train(tmp_path, fingerprint={"toy": 2}, resume_only=True, logs=logs)
    assert any("another config, trained; not loading it" in line for line in logs), logs
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


def test_the_refusal_names_changed_and_missing_parts_of_the_setup():
    from bench.train.checkpoints import setup_differences

    committed = {"epochs_done": 4, "files": {}, "fingerprint": {"split": "ab", "old": 1},
                 "setup": {"precision": "fp32", "device": "cpu"}}
    current = {"fingerprint": {"split": "cd", "new": 2}, "setup": {"precision": "bf16", "device": "cpu"}}
    assert setup_differences(committed, current) == ("split 'ab' there, 'cd' here; precision 'fp32' there, 'bf16' "
                                                     "here; new absent there; old absent here")
    # A state committed before its setup was described: only the hashed key can be said to differ.
    assert setup_differences({"key": "1", "epochs_done": 4}, {"key": "2", "setup": {"precision": "bf16"}}) == \
        "its data or settings key differs"
