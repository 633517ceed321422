"""One training lifecycle for every method that trains: resume, seeded epochs of optimizer steps, a time
budget, validation every N epochs with early stopping, one commit per epoch (and, optionally, every few
minutes inside an epoch), and the best epoch reloaded at the end. The state is a plain dict saved
atomically with each checkpoint (bench.train.checkpoints), as Hugging Face's `TrainerState`: a resumed
run continues at the step it stopped after, with the same batches and dropout as without the stop.

A method supplies `TrainingHooks`: the optimizer steps of an epoch, one step, and its checkpoint files.
`EpochTrainer` is the hooks of a from-scratch model whose every batch is one step (SASRec, TIGER).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench.atomic import atomic_write
from bench.errors import BenchError
from bench.method import nothing_to_load
from bench.train.checkpoints import STATE, CheckpointDir, other_setup, refused_other_setup
from bench.train.distributed import barrier, is_main, sum_gradients, sum_over_ranks, sums_over_ranks, world
from bench.train.optimizer_step import step_if_finite
from bench.train.progress import progress_bar

Writers = dict[str, tuple[str, Callable[[Path], None]]]
# `bench run --finish` leaves this file in a run's work dir: the loop (here or in a process already running)
# stops after its current step as a time budget would, and the record says stopped_by FINISH_REQUESTED.
FINISH_REQUEST = "finish.request"
FINISH_REQUESTED = "finish_requested"
PARTIAL_REASONS = {"max_train_minutes": "time budget", FINISH_REQUESTED: "finish requested"}
STATE_DEFAULTS: dict[str, Any] = {
    "epochs_done": 0, "best_epoch": None, "best_score": None, "bad_epochs": 0, "finished": False, "stopped_by": None,
    "epoch_scores": [], "validated_epochs": [], "epoch_losses": [], "optimizer_steps": 0, "train_seconds": 0.0,
    "validate_seconds": 0.0, "resumed_after_epoch": None, "calls": 0, "examples_seen": 0,
    # Inside the epoch being trained (mid-epoch commits): steps done and the loss so far.
    "steps_done_in_epoch": 0, "epoch_loss_sum": 0.0, "epoch_loss_weight": 0.0,
    # The share of its optimizer steps the last epoch ran when a budget or a finish request cut it short.
    "cut_epoch_fraction": None,
    # LLM trainers: the backbone's attention kernel in the last step trained (bench.train.precision).
    "train_attention": None,
}


class FinishHandedOver(Exception):
    """`bench run --finish` found the run training in another process and left it the request."""


def request_finish(work_dir: Path, record_path: Path) -> None:
    """Ask the training in `work_dir` to end where it stands (FINISH_REQUEST): its best validated epoch is
    then evaluated and recorded as stopped on request (not converged). Refused when nothing is committed
    there (a run with no trained step has nothing to finish); FinishHandedOver when another process is
    training the run: that process honours the request and writes the record."""
    from bench.train.locks import work_dir_holder

    if not any(work_dir.glob("*progress.json")):
        raise BenchError(f"--finish: {work_dir} holds no committed training (no progress file); --finish ends "
                         "a resumable run that has trained, it does not start one")
    atomic_write(work_dir / FINISH_REQUEST, lambda path: path.write_text("requested by bench run --finish\n"))
    holder = work_dir_holder(work_dir)
    if holder is not None:
        raise FinishHandedOver(f"{work_dir}: pid {holder} is training this run; asked it to finish: it stops "
                               f"after its current step, validates, ranks the test requests and writes {record_path}")


# Every training also commits inside an epoch at most this often (a full-Beauty epoch of CoVE, TIGER or LC-Rec
# takes 40 minutes to hours on a 2-core CPU; a commit of CoVE's trainable tensors and optimizer, ~170 MB at
# Beauty's 12k items, about a second), so a stopped run loses at most this much.
COMMIT_EVERY_SECONDS = 300.0


@dataclass(frozen=True)
class LoopSettings:
    name: str                      # the method's name, for log lines and progress bars
    epochs: int
    patience: int                  # validations without a better score before stopping; 0 = never
    seed: int = 0
    budget_minutes: float | None = None
    resume_only: bool = False      # RunContext.resume_only: load a finished run, never train
    validate_every: int = 1        # epochs between validations (the last epoch is always validated)
    commit_every_seconds: float | None = None  # commit inside an epoch this often; None: COMMIT_EVERY_SECONDS
    # What `validate` returns (higher is better); a loss is returned negated ("negative validation loss").
    metric: str = "validation NDCG@10"


@dataclass
class StepResult:
    """One optimizer step on this rank: its loss summed over `weight` units (examples, micro-batches), the
    training examples it used, and whether its gradients were finite (else the step was not applied)."""

    loss_sum: float
    weight: float
    examples: int
    finite_gradients: bool = True


class TrainingLoop:
    """Runs `hooks` to the end of training under `settings`; `fingerprint` holds the state keys a resumable
    work dir must match (config, data): one trained under another is refused and kept (BenchError naming what
    differs; `bench run --force` starts over), an untrained one starts afresh. The hooks (see EpochTrainer):
    - `epoch_steps(epoch)`: the epoch's optimizer steps, each what `step` takes (seeded by epoch);
    - `step(work) -> StepResult`: forward, backward, gradients reduced over ranks, one optimizer step;
    - `micro_batches(work)`: how many batches the progress bar counts for one step;
    - `checkpoint_files(best, tag)`: on every rank, (rank 0's writers by role, files other ranks wrote);
    - `load_checkpoint(path, resume_only)`: load the committed files (`path(role)`; weights only when
      `resume_only`); `load_best(path)`: load the best epoch's weights."""

    def __init__(self, hooks: Any, settings: LoopSettings, *, model: torch.nn.Module, work_dir: Path,
                 validate: Callable[[], float] | None, log: Callable[[str], None], fingerprint: dict[str, Any],
                 state_name: str = STATE,
                 extra_state: dict[str, Any] | None = None, described: dict[str, Any] | None = None) -> None:
        self.hooks, self.s, self.model, self.validate, self.log = hooks, settings, model, validate, log
        # `described`: readable parts of a hashed fingerprint, saved with the state so a refusal can name them.
        self.work_dir, self.fingerprint, self.described = Path(work_dir), fingerprint, described or {}
        self.checkpoints = CheckpointDir(self.work_dir, state_name=state_name)
        self.state: dict[str, Any] = copy.deepcopy({**STATE_DEFAULTS, **(extra_state or {})})

    # -- checkpoints ----------------------------------------------------------------------

    def commit(self, best: bool, tag: str) -> None:
        """One commit (bench.train.checkpoints): the files, then the state naming them. Every rank joins
        (sharded weights are gathered); rank 0 writes."""
        writers, written = self.hooks.checkpoint_files(best, tag)
        if is_main():
            self.checkpoints.commit({**self.state, **self.fingerprint, "setup": self.described}, tag, writers, written)
        barrier()

    def _resume(self) -> None:
        record = self.checkpoints.read_state()
        other, trained = other_setup(record, self.fingerprint)
        # Training over another setup's trained dir would delete it: every rank refuses, together.
        if not self.s.resume_only and sum_over_ranks(float(trained)) > 0:
            raise BenchError(refused_other_setup(self.work_dir, record or {}, self.fingerprint, self.described))
        if other:
            done = "trained; not loading it" if trained else "untrained; starting afresh"
            self.log(f"{self.s.name}: {self.work_dir} holds a run with another config, {done}")
        if record is None or other:
            return
        try:
            if self.checkpoints.path(record, "last") is None:
                raise OSError("its state names no checkpoint file")
            self.hooks.load_checkpoint(lambda role: self.checkpoints.path(record, role), self.s.resume_only)
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise BenchError(f"{self.work_dir}: cannot resume from it ({str(error)[:160]}); delete it or run "
                             "again with --force") from None
        self.state = {key: record.get(key, default) for key, default in self.state.items()}
        if not self.state["validated_epochs"]:  # states written when every epoch was validated
            self.state["validated_epochs"] = list(range(1, len(self.state["epoch_scores"]) + 1))
        self.state["resumed_after_epoch"] = self.state["epochs_done"]
        inside = f", step {self.state['steps_done_in_epoch']} of epoch {self.state['epochs_done'] + 1}" \
            if self.state["steps_done_in_epoch"] else ""
        self.log(f"{self.s.name}: resumed after epoch {self.state['epochs_done']}{inside} from {self.work_dir}")

    def load_best(self) -> None:
        # From the committed state on disk: every rank reads what rank 0 committed.
        best = self.checkpoints.path(self.checkpoints.read_state(), "best")
        if best is not None and best.exists():
            self.hooks.load_best(best)

    # -- training -------------------------------------------------------------------------

    def train(self) -> dict[str, Any]:
        self._resume()
        s, p = self.s, self.state
        if s.resume_only and not p["finished"]:
            raise nothing_to_load(self.work_dir, s.name, "its progress file is missing, unfinished or from other "
                                  "settings")
        rank, ranks = world()
        if not p["finished"]:
            p["calls"] += 1
        started = time.perf_counter() - p["train_seconds"]
        deadline = started + s.budget_minutes * 60 if s.budget_minutes else None
        last_commit = time.perf_counter()
        if not p["finished"] and self._finish_requested():
            self._finish_where_it_stands(started)
        while not p["finished"] and p["epochs_done"] < s.epochs:
            epoch = p["epochs_done"]
            steps = self.hooks.epoch_steps(epoch)
            sizes = [self.hooks.micro_batches(work) for work in steps]
            self.model.train()
            bar = progress_bar(total=sum(sizes), initial=sum(sizes[:p["steps_done_in_epoch"]]), unit="batch",
                               desc=f"{s.name} epoch {epoch + 1}/{s.epochs}", enabled=is_main())
            out_of_time, why = False, "max_train_minutes"
            for index in range(p["steps_done_in_epoch"], len(steps)):
                # Dropout seeded by step and rank: a run resumed inside an epoch draws what it would have.
                torch.manual_seed(s.seed * 1_000_003 + epoch * 100_003 + index + 7919 * rank)
                result = self.hooks.step(steps[index])
                now = time.perf_counter()
                # Every rank's share of the step, and the clocks' verdicts (clocks differ: one rank stopping or
                # committing alone would leave the others waiting in the next collective), in one all-reduce.
                shared = sums_over_ranks([result.loss_sum, result.weight, result.examples,
                                          deadline is not None and now > deadline,
                                          now - last_commit > (s.commit_every_seconds or COMMIT_EVERY_SECONDS),
                                          is_main() and self.finish_request_path.exists(),
                                          not result.finite_gradients])
                totals, past_deadline, commit_due = shared[:3], shared[3] > 0, shared[4] > 0
                if shared[6] > 0 or not math.isfinite(totals[0]):  # shared sums: every rank stops here together
                    bad = "gradients" if shared[6] > 0 else f"loss ({totals[0]})"
                    raise BenchError(f"{s.name}: non-finite training {bad} at epoch {epoch + 1}, optimizer step "
                                     f"{index + 1}; training stops, keeping the weights from before that step and the "
                                     f"last commit. Lower {s.name}.learning_rate, or try --set "
                                     f"{s.name}.train_attention=eager where the method has it")
                if shared[5] > 0:
                    past_deadline, why = True, FINISH_REQUESTED
                p["optimizer_steps"] += 1
                p["steps_done_in_epoch"] = index + 1
                p["epoch_loss_sum"] += totals[0]
                p["epoch_loss_weight"] += totals[1]
                p["examples_seen"] += int(totals[2])
                bar.update(sizes[index])
                if p["epoch_loss_weight"]:
                    bar.set_postfix(loss=f"{p['epoch_loss_sum'] / p['epoch_loss_weight']:.4f}", refresh=False)
                if past_deadline:
                    out_of_time = True
                    break
                # Every rank joins a commit (sharded tensors are gathered): the clock's verdict is shared.
                if commit_due and index + 1 < len(steps):
                    p["train_seconds"] = now - started
                    self.commit(best=False, tag=f"e{epoch:04d}s{index + 1:06d}")
                    last_commit = time.perf_counter()
            bar.close()
            p["epoch_losses"].append(round(p["epoch_loss_sum"] / max(1e-12, p["epoch_loss_weight"]), 5))
            p.update(epochs_done=epoch + 1, steps_done_in_epoch=0, epoch_loss_sum=0.0, epoch_loss_weight=0.0,
                     cut_epoch_fraction=(index + 1) / len(steps) if out_of_time and index + 1 < len(steps) else None)
            last = out_of_time or p["epochs_done"] >= s.epochs
            due = last or p["epochs_done"] % max(1, s.validate_every) == 0
            improved = self._after_epoch(epoch + 1, partial=why if out_of_time else None) if due else False
            p["train_seconds"] = time.perf_counter() - started  # validation included (also in validate_seconds)
            if out_of_time:
                p.update(finished=True, stopped_by=why)
            elif s.patience > 0 and p["bad_epochs"] >= s.patience:
                p.update(finished=True, stopped_by="early_stopping")
            elif p["epochs_done"] >= s.epochs:
                p.update(finished=True, stopped_by="epochs")
            self.commit(best=improved, tag=f"e{p['epochs_done']:04d}")
            last_commit = time.perf_counter()
        if p["finished"] and is_main():
            self.finish_request_path.unlink(missing_ok=True)  # honoured (or moot): a later run starts clean
        if self.validate is not None:
            self.load_best()
        self.model.eval()
        return dict(p)

    @property
    def finish_request_path(self) -> Path:
        return self.work_dir / FINISH_REQUEST

    def _finish_requested(self) -> bool:
        """Rank 0 looks for the request; every rank gets its verdict."""
        return sum_over_ranks(1.0 if is_main() and self.finish_request_path.exists() else 0.0) > 0

    def _finish_where_it_stands(self, started: float) -> None:
        """End a resumed run without another step: steps committed inside an epoch count as a partial epoch
        (as a time budget's), the last epoch is validated if it was not, and the state is finished."""
        p = self.state
        partial = p["steps_done_in_epoch"] > 0
        if partial:
            p["epoch_losses"].append(round(p["epoch_loss_sum"] / max(1e-12, p["epoch_loss_weight"]), 5))
            steps = len(self.hooks.epoch_steps(p["epochs_done"]))
            p.update(epochs_done=p["epochs_done"] + 1, steps_done_in_epoch=0, epoch_loss_sum=0.0,
                     epoch_loss_weight=0.0, cut_epoch_fraction=p["steps_done_in_epoch"] / steps)
        epoch = p["epochs_done"]
        validated = p["validated_epochs"][-1] if p["validated_epochs"] else None
        improved = self._after_epoch(epoch, partial=FINISH_REQUESTED if partial else None) \
            if epoch and validated != epoch else False
        p["train_seconds"] = time.perf_counter() - started
        p.update(finished=True, stopped_by=FINISH_REQUESTED)
        self.commit(best=improved, tag=f"e{epoch:04d}")

    def _after_epoch(self, epoch: int, partial: str | None) -> bool:
        """Validate (when the harness lent a validator); True when this epoch is the best so far. `partial`:
        why the epoch was cut short (None: it ran to its end)."""
        p = self.state
        if self.validate is None:
            p["best_epoch"] = epoch
            return True
        clock = time.perf_counter()
        self.model.eval()
        with torch.no_grad():
            score = float(self.validate())
        self.model.train()
        p["validate_seconds"] += time.perf_counter() - clock
        p["epoch_scores"].append(round(score, 6))
        p["validated_epochs"].append(epoch)
        note = f" (partial epoch: {PARTIAL_REASONS.get(partial, partial)})" if partial else ""
        head = f"{self.s.name}: epoch {epoch} loss {p['epoch_losses'][-1]:.4f}, {self.s.metric} {score:.4f}"
        if p["best_score"] is None or score > p["best_score"]:
            p.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            self.log(f"{head} (best){note}")
            return True
        p["bad_epochs"] += 1
        self.log(f"{head} (best {p['best_score']:.4f} at epoch {p['best_epoch']}){note}")
        return False


class EpochTrainer:
    """The hooks of a small from-scratch model: `epoch_batches(epoch)` lists an epoch's batches, each one
    optimizer step; `step(batch) -> (loss, examples)` computes a loss that is a mean over those examples.
    Under torchrun each global batch is split into one contiguous slice per rank; each rank's loss is
    weighted by its share of the batch's examples and the gradients are summed across ranks, so a step is
    the global batch's mean gradient whatever the number of ranks."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: LoopSettings, *,
                 work_dir: Path, device: str, validate: Callable[[], float] | None, log: Callable[[str], None],
                 fingerprint: dict[str, Any], scheduler: Any = None) -> None:
        self.model, self.optimizer, self.scheduler, self.device = model, optimizer, scheduler, device
        self.loop = TrainingLoop(self, settings, model=model, work_dir=work_dir, validate=validate, log=log,
                                 fingerprint={"fingerprint": fingerprint})
        self.trainable = [param for param in model.parameters() if param.requires_grad]
        self._batches: Callable[[int], list[Any]] = lambda epoch: []
        self._step: Callable[[Any], tuple[torch.Tensor, int]] | None = None

    def train(self, epoch_batches: Callable[[int], list[Any]],
              step: Callable[[Any], tuple[torch.Tensor, int]]) -> dict[str, Any]:
        self._batches, self._step = epoch_batches, step
        return self.loop.train()

    # -- TrainingHooks --------------------------------------------------------------------

    def epoch_steps(self, epoch: int) -> list[Any]:
        return list(self._batches(epoch))

    def micro_batches(self, work: Any) -> int:
        return 1

    def step(self, batch: Any) -> StepResult:
        rank, ranks = world()
        mine = batch if ranks == 1 else list(batch)[len(batch) * rank // ranks:len(batch) * (rank + 1) // ranks]
        self.optimizer.zero_grad(set_to_none=True)
        assert self._step is not None
        loss, count = self._step(mine) if mine else (torch.zeros(()), 0)  # an empty slice adds nothing
        if ranks > 1:  # weight = this rank's share of the global batch's examples
            everyone = sum_over_ranks(count)
            if count:
                (loss * (count * ranks / everyone)).backward()
            sum_gradients(self.trainable)
            for param in self.trainable:
                param.grad /= ranks
        else:
            loss.backward()
        stepped = step_if_finite(self.optimizer, self.trainable)
        if self.scheduler is not None:
            self.scheduler.step()
        return StepResult(float(loss.detach()) * count, count, count, finite_gradients=stepped)

    def checkpoint_files(self, best: bool, tag: str) -> tuple[Writers, dict[str, str]]:
        if not is_main():  # every rank holds the same weights; rank 0 writes them
            return {}, {}
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        writers: Writers = {"last": (".pt", lambda path: torch.save(state, path))}
        if best:
            weights = self.model.state_dict()
            writers["best"] = (".pt", lambda path: torch.save(weights, path))
        return writers, {}

    def load_checkpoint(self, path: Callable[[str], Path | None], resume_only: bool) -> None:
        state = torch.load(path("last"), map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def load_best(self, path: Path) -> None:
        self.model.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))


def training_facts(progress: dict[str, Any], epochs_max: int, patience: int) -> dict[str, Any]:
    """What a record says about a run of this lifecycle: epochs run of the maximum, why it stopped, the
    validation and loss curves, and seconds per epoch without validation."""
    epochs = progress.get("epochs_done") or 0
    cut = progress.get("cut_epoch_fraction")
    trained = epochs - 1 + cut if epochs and cut is not None else epochs  # a cut-short last epoch counts its share
    loop_seconds = (progress.get("train_seconds") or 0.0) - (progress.get("validate_seconds") or 0.0)
    return {
        "epochs_run": epochs,
        "epochs_trained": round(trained, 4),
        "epochs_max": epochs_max,
        "best_epoch": progress.get("best_epoch"),
        "stopped_by": progress.get("stopped_by"),
        "patience": patience,
        "epoch_scores": progress.get("epoch_scores"),
        "validated_epochs": progress.get("validated_epochs"),
        "training_calls": progress.get("calls"),
        "examples_seen": progress.get("examples_seen"),
        "epoch_losses": progress.get("epoch_losses"),
        "optimizer_steps": progress.get("optimizer_steps"),
        "seconds_per_epoch": round(loop_seconds / trained, 2) if trained else None,
        "validate_seconds": round(progress.get("validate_seconds") or 0.0, 1),
        "resumed_after_epoch": progress.get("resumed_after_epoch"),
        # Every call that trained this run (the record's train_seconds is this call's stopwatch).
        "train_seconds_all_calls": round(progress.get("train_seconds") or 0.0, 3),
        "train_attention": progress.get("train_attention"),  # the backbone's kernel in the last step trained
    }
