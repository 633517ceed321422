"""torchrun on the CPU (gloo, 2 ranks): data-parallel training takes the global batch's mean gradient,
sharded evaluation gives exactly the single-process metrics for the same weights, and a method without
data-parallel support refuses the launch in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import committed_file

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
# Every launch's environment: loopback gloo, one thread per rank, and a Python stack if a rank aborts.
RANK_ENV = {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
NO_DROPOUT = ["--set", "sasrec_native.epochs=2", "--set", "sasrec_native.dropout=0.0", "--set",
              "sasrec_native.batch_size=16"]


def launch(ranks: int, *args: str) -> subprocess.CompletedProcess:
    """Fresh processes (never forked from pytest): torchrun when ranks > 1, plain python otherwise."""
    runner = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 else []
    env = {**os.environ, **RANK_ENV}
    return subprocess.run([sys.executable, *runner, "-m", "bench.cli", *args, "--threads", "1"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)


def why(process: subprocess.CompletedProcess) -> str:
    """A failed launch's stderr, long enough to hold the failing rank's own traceback: torchrun's summary
    alone fills the last ~2,500 characters (one CI failure showed nothing else, another only torchrun's
    summary after 8,000), and stdout's end (whether rank 0 had recorded)."""
    return f"stdout: {process.stdout[-2000:]}\nstderr: {process.stderr[-20000:]}"


def records(isolated: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in (isolated / "results" / "runs" / "tiny").glob("*.json")}


def tiny_lm_folder(isolated: Path, tmp_path: Path, method: str) -> Path:
    """A random tiny Llama saved as a local model folder, its vocabulary taken from the method's prompts
    on the tiny fixture (the --model a torchrun launch loads)."""
    from tiny import tiny_backbone

    from bench.data.prepare import prepare
    from methods.bigrec.prompts import build_prompt
    from methods.cove.prompts import prompt_texts

    dataset, _ = prepare("tiny", REPO / "datasets", isolated / "cache")
    titles = [dataset.catalogue.title_or(i) for i in range(dataset.num_items)]
    model, tokenizer = tiny_backbone(prompt_texts(dataset.catalogue) if method == "cove" else [build_prompt(titles)])
    folder = tmp_path / "tiny-lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_two_ranks_train_like_one_and_score_exactly_like_one(isolated: Path):
    two = launch(2, "run", "--method", "sasrec_native", "--dataset", "tiny", *NO_DROPOUT)
    assert two.returncode == 0, why(two)
    assert two.stdout.count("recorded at") == 1  # rank 0 speaks and writes
    one = launch(1, "run", "--method", "sasrec_native", "--dataset", "tiny", *NO_DROPOUT)
    assert one.returncode == 0, why(one)
    by_world = {r.get("distributed", {}).get("world_size", 1): (name, r) for name, r in records(isolated).items()}
    assert set(by_world) == {1, 2}
    name, record = by_world[2]
    assert record["distributed"]["backend"] == "gloo" and len(record["distributed"]["hardware_per_rank"]) == 2
    assert record["ranks"]["positions"] == {"test": 40}
    # Same global batches, summed example-weighted gradients: the model scores like one process's. (Raw
    # weights whose true gradient is ~0, like attention key biases, get Adam-amplified rounding noise.)
    from bench.method import RunContext
    from methods.sasrec_native.method import NativeSASRecMethod

    work = isolated / "cache" / "work" / "tiny"
    scores = {}
    for world, (n, r) in by_world.items():
        method = NativeSASRecMethod(r["config"]["sasrec_native"], RunContext())
        method._build(num_items=r["dataset_info"]["items"])
        method.model.load_state_dict(torch.load(committed_file(work / Path(n).stem, "best"),
                                                     weights_only=True))
        scores[world] = method.score([0, 1, 2], [[1, 2, 3], [4], [5, 6, 7, 8, 9]])
    assert torch.allclose(scores[1], scores[2], atol=1e-3, rtol=0), (scores[1] - scores[2]).abs().max()
    # Sharded scoring: one process scoring the 2-rank weights reproduces the recorded metrics exactly.
    path = isolated / "results" / "runs" / "tiny" / name
    stored = json.loads(path.read_text())
    path.with_name(stored.pop("ranks")["file"]).unlink()
    path.write_text(json.dumps(stored))
    rescored = launch(1, "rescore", str(path))
    assert rescored.returncode == 0, why(rescored)


def test_pop_scores_the_same_on_two_ranks_and_recbole_refuses(isolated: Path):
    assert launch(2, "run", "--method", "pop", "--dataset", "tiny").returncode == 0
    assert launch(1, "run", "--method", "pop", "--dataset", "tiny").returncode == 0
    metrics = [r["metrics"] for r in records(isolated).values()]
    assert len(metrics) == 2 and metrics[0] == metrics[1]
    # Several runs in one launch share the process group, which is left once, when the command ends.
    seeds = launch(2, "run", "--method", "pop", "--dataset", "tiny", "--seeds", "1,2")
    assert seeds.returncode == 0, why(seeds)
    assert len(records(isolated)) == 4
    refused = launch(2, "run", "--method", "gru4rec", "--dataset", "tiny")
    # Each rank exits 2 with the one-line error (torchrun then reports the failed children itself).
    assert refused.returncode != 0 and "error: gru4rec: no data-parallel training here" in refused.stderr
    assert "exitcode  : 2" in refused.stderr or "exit code 2" in refused.stderr.lower()


@pytest.mark.slow  # whole trainings in 2 ranks; the first-step gradient test covers the scale in CI
def test_cove_trains_data_parallel_like_one_process(isolated: Path, tmp_path: Path):
    """CoVE on a tiny random Llama: 2 ranks (each half of every batch, summed gradients) end with the
    adapter and item tables of one process, and their record re-scores exactly in one process."""
    from safetensors.torch import load_file

    folder = tiny_lm_folder(isolated, tmp_path, "cove")
    args = ["run", "--method", "cove", "--dataset", "tiny", "--model", str(folder), "--set", "cove.epochs=2",
            "--set", "cove.batch_size=8", "--set", "cove.grad_accum=2", "--set", "cove.learning_rate=0.003",
            "--set", "cove.use_titles=false", "--set", "cove.loss=sequence"]
    two = launch(2, *args)
    assert two.returncode == 0, why(two)
    one = launch(1, *args)
    assert one.returncode == 0, why(one)
    by_world = {r.get("distributed", {}).get("world_size", 1): name for name, r in records(isolated).items()}
    trained = {w: records(isolated)[n]["method_info"] for w, n in by_world.items()}
    # Each rank trained about half of every batch; together exactly the one process's tokens.
    assert trained[2]["tokens_trained"] == trained[1]["tokens_trained"]
    # Scoring counts are summed over the ranks: every test prompt counted, not rank 0's half.
    assert trained[2]["tokens_per_request"] == trained[1]["tokens_per_request"]
    assert 0.3 < trained[2]["tokens_trained_by_this_rank"] / trained[1]["tokens_trained"] < 0.7
    work = isolated / "cache" / "work" / "tiny"
    states = {w: load_file(committed_file(work / Path(n).stem, "best", "cove_progress.json"))
              for w, n in by_world.items()}
    for key, tensor in states[1].items():
        if not key.endswith("codes"):
            assert torch.allclose(tensor.float(), states[2][key].float(), atol=2e-3), key
    path = isolated / "results" / "runs" / "tiny" / by_world[2]
    stored = json.loads(path.read_text())
    path.with_name(stored.pop("ranks")["file"]).unlink()
    path.write_text(json.dumps(stored))
    assert launch(1, "rescore", str(path)).returncode == 0


@pytest.mark.slow  # whole trainings in 2 ranks; the first-step gradient test covers the scale in CI
def test_bigrec_trains_data_parallel_like_one_process(isolated: Path, tmp_path: Path):
    """BIGRec's LoRA on a tiny random Llama: 2 ranks (each half of every micro-batch, weighted by its
    labelled tokens, gradients averaged) end with one process's adapter; one record is written."""
    folder = tiny_lm_folder(isolated, tmp_path, "bigrec")
    args = ["run", "--method", "bigrec", "--dataset", "tiny", "--model", str(folder), "--set", "bigrec.epochs=2",
            "--set", "bigrec.batch_size=5", "--set", "bigrec.grad_accum=2", "--set", "bigrec.learning_rate=0.003",
            "--set", "bigrec.warmup_steps=1", "--set", "bigrec.lora_dropout=0.0", "--set", "bigrec.num_beams=2",
            "--set", "bigrec.max_new_tokens=6", "--set", "bigrec.max_eval_users=6", "--set", "eval.max_valid_users=4"]
    two = launch(2, *args)
    assert two.returncode == 0, why(two)
    assert two.stdout.count("recorded at") == 1
    one = launch(1, *args)
    assert one.returncode == 0, why(one)
    by_world = {r.get("distributed", {}).get("world_size", 1): name for name, r in records(isolated).items()}
    assert set(by_world) == {1, 2}
    work = isolated / "cache" / "work" / "tiny"
    adapters = {w: torch.load(committed_file(work / Path(n).stem, "last"),
                                     weights_only=True)["adapter"]
                for w, n in by_world.items()}
    steps = {w: records(isolated)[n]["method_info"]["optimizer_steps"] for w, n in by_world.items()}
    assert steps[1] == steps[2] == 8  # 40 users / 5 per micro-batch / 2 per step, 2 epochs
    moved = 0
    for key, tensor in adapters[1].items():
        assert torch.allclose(tensor.float(), adapters[2][key].float(), atol=2e-3), key
        moved += int(not torch.equal(tensor, torch.zeros_like(tensor)))
    assert moved > 0  # the adapter trained at all (LoRA's B starts at zero)


def test_cove_trains_sharded_with_fsdp_like_one_process(isolated: Path, tmp_path: Path):
    """cove.fsdp: the training copy is sharded by fully_shard over 2 gloo ranks (each rank holds half of
    every sharded tensor), scoring uses a full copy; the adapter and item tables end like one process's,
    and fsdp without torchrun is refused in one line."""
    from safetensors.torch import load_file

    folder = tiny_lm_folder(isolated, tmp_path, "cove")
    args = ["run", "--method", "cove", "--dataset", "tiny", "--model", str(folder), "--set", "cove.epochs=2",
            "--set", "cove.batch_size=7", "--set", "cove.grad_accum=2", "--set", "cove.learning_rate=0.003",
            "--set", "cove.use_titles=false", "--set", "cove.loss=sequence"]
    refused = launch(1, *args, "--set", "cove.fsdp=true")
    assert refused.returncode == 2 and "[cove].fsdp = true: shards training over torchrun" in refused.stderr
    two = launch(2, *args, "--set", "cove.fsdp=true")
    assert two.returncode == 0, why(two)
    one = launch(1, *args)
    assert one.returncode == 0, why(one)
    by_world = {r.get("distributed", {}).get("world_size", 1): name for name, r in records(isolated).items()}
    info = records(isolated)[by_world[2]]["method_info"]
    assert info["sharding"].startswith("FSDP2") and records(isolated)[by_world[2]]["config"]["cove"]["fsdp"]
    work = isolated / "cache" / "work" / "tiny"
    # each rank's own shard state
    assert committed_file(work / Path(by_world[2]).stem, "optimizer.rank1", "cove_progress.json").exists()
    states = {w: load_file(committed_file(work / Path(n).stem, "last", "cove_progress.json"))
              for w, n in by_world.items()}
    for key, tensor in states[1].items():
        if not key.endswith("codes"):
            assert torch.allclose(tensor.float(), states[2][key].float(), atol=2e-3), key
    trained = {w: records(isolated)[n]["method_info"] for w, n in by_world.items()}
    assert trained[2]["tokens_trained"] == trained[1]["tokens_trained"]
    # Scoring counts are summed over the ranks: every test prompt counted, not rank 0's half.
    assert trained[2]["tokens_per_request"] == trained[1]["tokens_per_request"]
    # An FSDP record re-scores in one process (its files hold whole tensors; no shards, no optimizer needed).
    path = isolated / "results" / "runs" / "tiny" / by_world[2]
    stored = json.loads(path.read_text())
    path.with_name(stored.pop("ranks")["file"]).unlink()
    path.write_text(json.dumps(stored))
    rescored = launch(1, "rescore", str(path))
    assert rescored.returncode == 0, why(rescored)


def test_an_interrupted_two_rank_run_resumes_and_writes_one_record(isolated: Path):
    """Ctrl-C to torchrun after a few epochs (rank 0 had saved them), then the same launch again: it
    resumes after the last saved epoch, finishes, and only one record exists."""
    import signal
    import time

    args = ["run", "--method", "sasrec_native", "--dataset", "tiny", "--set", "sasrec_native.epochs=60",
            "--set", "sasrec_native.patience=0", "--set", "sasrec_native.batch_size=16"]
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
              "bench.cli", *args, "--threads", "1"]
    env = {**os.environ, **RANK_ENV}
    first = subprocess.Popen(runner, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    work = isolated / "cache" / "work" / "tiny"
    deadline = time.time() + 240
    epochs = 0
    while time.time() < deadline and first.poll() is None and epochs < 3:
        progress = list(work.glob("sasrec_native-*/progress.json"))
        if progress:
            try:
                epochs = json.loads(progress[0].read_text())["epochs_done"]
            except (json.JSONDecodeError, OSError):
                pass
        time.sleep(0.05)
    assert first.poll() is None, "the run ended before it could be interrupted"
    os.killpg(first.pid, signal.SIGINT)
    first.communicate(timeout=120)
    assert records(isolated) == {}  # nothing recorded by the interrupted run
    again = launch(2, *args)
    assert again.returncode == 0, why(again)
    [(name, record)] = records(isolated).items()
    info = record["method_info"]
    assert info["resumed_after_epoch"] >= 3 and info["epochs_run"] == 60 and record["distributed"]["world_size"] == 2


def first_step_gradients(ranks: int, folder: Path, *args: str) -> list[torch.Tensor | None]:
    """The gradients the first optimizer step applies (tests/grad_probe.py), checked equal on every rank."""
    folder.mkdir()
    runner = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 else []
    env = {**os.environ, **RANK_ENV, "GRAD_PROBE_DIR": str(folder)}
    done = subprocess.run([sys.executable, *runner, str(REPO / "tests" / "grad_probe.py"), *args, "--threads", "1"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, why(done)
    grads = [torch.load(folder / f"rank{r}.pt", weights_only=True) for r in range(ranks)]
    for other in grads[1:]:
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(grads[0], other))
    return grads[0]


GRADIENT_CASES = {
    "sasrec_ce": ["--method", "sasrec_native", *NO_DROPOUT],
    "sasrec_bce": ["--method", "sasrec_native", *NO_DROPOUT, "--set", "sasrec_native.loss=bce"],
    "cove": ["--method", "cove", "--set", "cove.batch_size=8", "--set", "cove.grad_accum=2", "--set",
             "cove.use_titles=false", "--set", "cove.loss=sequence"],
    "bigrec": ["--method", "bigrec", "--set", "bigrec.batch_size=5", "--set", "bigrec.grad_accum=2", "--set",
               "bigrec.lora_dropout=0.0"],
}


@pytest.mark.parametrize("case", list(GRADIENT_CASES))
def test_two_ranks_apply_the_one_process_gradient_at_the_first_step(case: str, isolated: Path, tmp_path: Path):
    """The averaged gradient itself, not the weights after Adam (scale-invariant) or clipping: a factor
    of 2 anywhere in the ranks' weighting or averaging fails here."""
    args = ["run", "--dataset", "tiny", *GRADIENT_CASES[case]]
    if case in ("cove", "bigrec"):
        args += ["--model", str(tiny_lm_folder(isolated, tmp_path, case))]
    one = first_step_gradients(1, tmp_path / "one", *args)
    two = first_step_gradients(2, tmp_path / "two", *args)
    compared = 0
    for a, b in zip(one, two, strict=True):
        if a is None or b is None:
            assert a is None and b is None or not (a if a is not None else b).any()
            continue
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7 + 1e-4 * float(a.abs().max())), (a - b).abs().max()
        compared += int(bool(a.any()))
    assert compared > 0  # some gradient was non-zero, so the comparison says something


def test_ranks_wait_together_while_rank_0_waits_for_the_training_slot(isolated: Path):
    """Another training holds the machine's slot for longer than the process group's timeout: every rank
    waits with rank 0 in short collectives and the run finishes once the slot is free (ranks blocked in
    one collective would die at the timeout)."""
    import fcntl
    import time

    lock = isolated / "cache" / "training.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **RANK_ENV, "BENCH_PROCESS_GROUP_TIMEOUT": "4"}
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 1: another training")
        held.flush()
        run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                                "-m", "bench.cli", "run", "--method", "sasrec_native", "--dataset", "tiny",
                                *NO_DROPOUT, "--threads", "1"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        time.sleep(15)  # well past the 4 s timeout
        assert run.poll() is None, run.communicate()[1][-2000:]
        fcntl.flock(held, fcntl.LOCK_UN)
    out, err = run.communicate(timeout=240)
    assert run.returncode == 0, err[-8000:]
    assert "waiting for pid 1: another training" in out + err and out.count("recorded at") == 1


def test_a_collective_refuses_a_tensor_its_backend_cannot_read(monkeypatch: pytest.MonkeyPatch):
    """nccl takes CUDA tensors only: the one helper every all-reduce goes through checks the device
    first, so a CPU tensor meant for nccl fails here on any machine, not at a GPU run's first batch."""
    import torch.distributed as dist

    from bench.train.distributed import all_reduce_sum, collective_device

    monkeypatch.setenv("LOCAL_RANK", "3")
    assert collective_device("nccl") == torch.device("cuda", 3) and collective_device("gloo").type == "cpu"
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, *a, **k: pytest.fail("reached nccl with a CPU tensor"))
    with pytest.raises(RuntimeError, match="nccl process group needs cuda tensors"):
        all_reduce_sum(torch.zeros(1, dtype=torch.float64))


def test_every_all_reduce_goes_through_the_checked_helper():
    """Collectives are built in one module; a direct dist.all_reduce elsewhere would bypass the device
    check (the float64 CPU tensor of the old sum_over_ranks did exactly that)."""
    import ast

    offenders = []
    for path in [*(REPO / "bench").rglob("*.py"), *(REPO / "methods").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "all_reduce", "reduce_scatter", "broadcast", "all_gather_into_tensor"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == ["bench/train/distributed.py:" + str(_line_of_all_reduce())]  # all_reduce_sum's own call


def _line_of_all_reduce() -> int:
    source = (REPO / "bench" / "train" / "distributed.py").read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(source, 1) if "dist.all_reduce(tensor)" in line)


@pytest.mark.parametrize("backend, failure, code, expected", [
    (None, None, 0, 0), (None, None, 2, 2), ("gloo", None, 0, 0), ("nccl", None, 0, 0), ("nccl", None, 2, 2),
    ("nccl", RuntimeError("communicator gone"), 0, 1), ("nccl", KeyboardInterrupt(), 0, 130)])
def test_a_rank_ends_with_its_code_and_without_teardown(backend: str | None, failure: BaseException | None, code: int,
                                                        expected: int, monkeypatch: pytest.MonkeyPatch):
    """A torchrun rank ends with os._exit after flushing its output, whether or not it joined a group (a
    recorded run never does): no interpreter teardown to destroy gloo's state, no gloo group destroyed, an
    nccl group destroyed as NCCL asks, and a failure while destroying it never ends in exit 0. One
    process exits normally."""
    import io

    import torch.distributed as dist

    from bench.train import distributed

    calls: list[str] = []

    def destroy(group=None) -> None:
        calls.append("leave")
        if failure is not None:
            raise failure

    class Exited(Exception):
        pass

    def exit_now(status: int) -> None:
        calls.append(f"_exit {status}")
        raise Exited

    class Output(io.StringIO):
        def flush(self) -> None:
            calls.append("flush")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: backend is not None)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(dist, "destroy_process_group", destroy)
    monkeypatch.setattr(distributed.os, "_exit", exit_now)
    monkeypatch.setattr(sys, "stdout", Output())
    monkeypatch.setattr(sys, "stderr", Output())
    with pytest.raises(Exited):
        distributed.end_process(code)
    assert calls == [*(["leave"] if backend == "nccl" else []), "flush", "flush", f"_exit {expected}"]
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(SystemExit) as one_process:
        distributed.end_process(code)
    assert one_process.value.code == code


def test_the_cli_ends_every_command_through_end_process(monkeypatch: pytest.MonkeyPatch):
    """main() hands its exit code to end_process (where a torchrun rank skips the teardown)."""
    import bench.cli

    ended: list[int] = []
    monkeypatch.setattr(bench.cli, "end_process", ended.append)
    monkeypatch.setattr(sys, "argv", ["bench", "run", "--method", "no_such_method", "--dataset", "tiny"])
    bench.cli.main()
    assert ended == [2]
