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

torch = pytest.importorskip("torch")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
NO_DROPOUT = ["--set", "sasrec_native.epochs=2", "--set", "sasrec_native.dropout=0.0", "--set",
              "sasrec_native.batch_size=16"]


def launch(ranks: int, *args: str) -> subprocess.CompletedProcess:
    """Fresh processes (never forked from pytest): torchrun when ranks > 1, plain python otherwise."""
    runner = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"] if ranks > 1 else []
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *runner, "-m", "bench.cli", *args, "--threads", "1"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=300)


def records(isolated: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in (isolated / "results" / "runs" / "tiny").glob("*.json")}


def tiny_lm_folder(isolated: Path, tmp_path: Path, method: str) -> Path:
    """A random tiny Llama saved as a local model folder, its vocabulary taken from the method's prompts
    on the tiny fixture (the --model a torchrun launch loads)."""
    from bench.backbone import tiny_backbone
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
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("recorded at") == 1  # rank 0 speaks and writes
    one = launch(1, "run", "--method", "sasrec_native", "--dataset", "tiny", *NO_DROPOUT)
    assert one.returncode == 0, one.stderr[-2000:]
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
        method.model.load_state_dict(torch.load(work / Path(n).stem / "best.pt", weights_only=True))
        scores[world] = method.score([0, 1, 2], [[1, 2, 3], [4], [5, 6, 7, 8, 9]])
    assert torch.allclose(scores[1], scores[2], atol=1e-3, rtol=0), (scores[1] - scores[2]).abs().max()
    # Sharded scoring: one process scoring the 2-rank weights reproduces the recorded metrics exactly.
    path = isolated / "results" / "runs" / "tiny" / name
    stored = json.loads(path.read_text())
    path.with_name(stored.pop("ranks")["file"]).unlink()
    path.write_text(json.dumps(stored))
    rescored = launch(1, "rescore", str(path))
    assert rescored.returncode == 0, rescored.stderr[-2000:]


def test_pop_scores_the_same_on_two_ranks_and_recbole_refuses(isolated: Path):
    assert launch(2, "run", "--method", "pop", "--dataset", "tiny").returncode == 0
    assert launch(1, "run", "--method", "pop", "--dataset", "tiny").returncode == 0
    metrics = [r["metrics"] for r in records(isolated).values()]
    assert len(metrics) == 2 and metrics[0] == metrics[1]
    refused = launch(2, "run", "--method", "gru4rec", "--dataset", "tiny")
    # Each rank exits 2 with the one-line error (torchrun then reports the failed children itself).
    assert refused.returncode != 0 and "error: gru4rec: no data-parallel training here" in refused.stderr
    assert "exitcode  : 2" in refused.stderr or "exit code 2" in refused.stderr.lower()


def test_cove_trains_data_parallel_like_one_process(isolated: Path, tmp_path: Path):
    """CoVE on a tiny random Llama: 2 ranks (each half of every batch, summed gradients) end with the
    adapter and item tables of one process, and their record re-scores exactly in one process."""
    from safetensors.torch import load_file

    folder = tiny_lm_folder(isolated, tmp_path, "cove")
    args = ["run", "--method", "cove", "--dataset", "tiny", "--model", str(folder), "--set", "cove.epochs=2",
            "--set", "cove.batch_size=8", "--set", "cove.grad_accum=2", "--set", "cove.learning_rate=0.003",
            "--set", "cove.use_titles=false", "--set", "cove.loss=sequence"]
    two = launch(2, *args)
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(1, *args)
    assert one.returncode == 0, one.stderr[-3000:]
    by_world = {r.get("distributed", {}).get("world_size", 1): name for name, r in records(isolated).items()}
    trained = {w: records(isolated)[n]["method_info"]["training"] for w, n in by_world.items()}
    # Each rank trained about half of every batch; together exactly the one process's tokens.
    assert trained[2]["tokens_trained"] == trained[1]["tokens_trained"]
    assert 0.3 < trained[2]["tokens_trained_by_this_rank"] / trained[1]["tokens_trained"] < 0.7
    work = isolated / "cache" / "work" / "tiny"
    states = {w: load_file(work / Path(n).stem / "cove_best.safetensors") for w, n in by_world.items()}
    for key, tensor in states[1].items():
        if not key.endswith("codes"):
            assert torch.allclose(tensor.float(), states[2][key].float(), atol=2e-3), key
    path = isolated / "results" / "runs" / "tiny" / by_world[2]
    stored = json.loads(path.read_text())
    path.with_name(stored.pop("ranks")["file"]).unlink()
    path.write_text(json.dumps(stored))
    assert launch(1, "rescore", str(path)).returncode == 0


def test_bigrec_trains_data_parallel_like_one_process(isolated: Path, tmp_path: Path):
    """BIGRec's LoRA on a tiny random Llama: 2 ranks (each half of every micro-batch, weighted by its
    labelled tokens, gradients averaged) end with one process's adapter; one record is written."""
    folder = tiny_lm_folder(isolated, tmp_path, "bigrec")
    args = ["run", "--method", "bigrec", "--dataset", "tiny", "--model", str(folder), "--set", "bigrec.epochs=2",
            "--set", "bigrec.batch_size=5", "--set", "bigrec.grad_accum=2", "--set", "bigrec.learning_rate=0.003",
            "--set", "bigrec.warmup_steps=1", "--set", "bigrec.lora_dropout=0.0", "--set", "bigrec.num_beams=2",
            "--set", "bigrec.max_new_tokens=6", "--set", "bigrec.max_eval_users=6", "--set", "eval.max_valid_users=4"]
    two = launch(2, *args)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("recorded at") == 1
    one = launch(1, *args)
    assert one.returncode == 0, one.stderr[-3000:]
    by_world = {r.get("distributed", {}).get("world_size", 1): name for name, r in records(isolated).items()}
    assert set(by_world) == {1, 2}
    work = isolated / "cache" / "work" / "tiny"
    adapters = {w: torch.load(work / Path(n).stem / "bigrec_train_state.pt", weights_only=True)["adapter"]
                for w, n in by_world.items()}
    steps = {w: records(isolated)[n]["method_info"]["training"]["optimizer_steps"] for w, n in by_world.items()}
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
    assert two.returncode == 0, two.stderr[-3000:]
    one = launch(1, *args)
    assert one.returncode == 0, one.stderr[-3000:]
    by_world = {r.get("distributed", {}).get("world_size", 1): name for name, r in records(isolated).items()}
    info = records(isolated)[by_world[2]]["method_info"]
    assert info["sharding"].startswith("FSDP2") and records(isolated)[by_world[2]]["config"]["cove"]["fsdp"]
    work = isolated / "cache" / "work" / "tiny"
    assert (work / Path(by_world[2]).stem / "cove_optimizer.pt.rank1").exists()  # each rank's own shard state
    states = {w: load_file(work / Path(n).stem / "cove_last.safetensors") for w, n in by_world.items()}
    for key, tensor in states[1].items():
        if not key.endswith("codes"):
            assert torch.allclose(tensor.float(), states[2][key].float(), atol=2e-3), key
    trained = {w: records(isolated)[n]["method_info"]["training"] for w, n in by_world.items()}
    assert trained[2]["tokens_trained"] == trained[1]["tokens_trained"]


def test_an_interrupted_two_rank_run_resumes_and_writes_one_record(isolated: Path):
    """Ctrl-C to torchrun after a few epochs (rank 0 had saved them), then the same launch again: it
    resumes after the last saved epoch, finishes, and only one record exists."""
    import signal
    import time

    args = ["run", "--method", "sasrec_native", "--dataset", "tiny", "--set", "sasrec_native.epochs=60",
            "--set", "sasrec_native.patience=0", "--set", "sasrec_native.batch_size=16"]
    runner = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
              "bench.cli", *args, "--threads", "1"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
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
    assert again.returncode == 0, again.stderr[-3000:]
    [(name, record)] = records(isolated).items()
    info = record["method_info"]
    assert info["resumed_after_epoch"] >= 3 and info["epochs_run"] == 60 and record["distributed"]["world_size"] == 2
