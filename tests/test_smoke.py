"""`bench smoke` (the GPU script's first step) runs every LLM method through the harness in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_model_threads
from tiny import tiny_backbone

from bench.runs.smoke import SMOKE_REQUESTS, smoke


@pytest.fixture
def tiny_lm(isolated: Path) -> str:
    """A random tiny Llama whose word tokenizer covers the tiny fixture's CoVE, BIGRec and LC-Rec prompts."""
    from bench.config import load_config
    from bench.data.prepare import prepare
    from bench.runs.setup import run_paths
    from methods.bigrec.prompts import build_prompt
    from methods.cove.prompts import prompt_texts
    from methods.lcrec.prompts import INSTRUCTION, SEPARATOR

    paths = run_paths(load_config())
    dataset, _ = prepare("tiny", paths.data_dir, paths.cache_dir)
    titles = [dataset.catalogue.title_or(i) for i in range(dataset.num_items)]
    model, tokenizer = tiny_backbone([*prompt_texts(dataset.catalogue), build_prompt(titles), INSTRUCTION + SEPARATOR])
    folder = isolated / "tiny-lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_smoke(device: str, tiny_lm: str, isolated: Path) -> None:
    lines: list[str] = []
    summaries = smoke(["cove", "bigrec", "lcrec"], device, model=tiny_lm, log=lines.append)
    assert [s["method"] for s in summaries] == ["cove", "bigrec", "lcrec"]
    assert all(s["requests"] == SMOKE_REQUESTS and s["device"] == device for s in summaries)
    # Two optimizer steps, so weights the first step left non-finite fail the second (the lifecycle's guard).
    assert [s["optimizer_steps"] for s in summaries] == [2, 2, 2], summaries
    assert len(lines) == 3 and all(line.endswith(": ok") for line in lines)
    assert not list((isolated / "results").rglob("*.json"))  # a check, not a result


def test_smoke_builds_trains_and_ranks_each_llm_method(tiny_lm: str, isolated: Path):
    torch.set_num_threads(tiny_model_threads())
    run_smoke("cpu", tiny_lm, isolated)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here; scripts/gpu_run.sh runs "
                                                          "`bench smoke --device cuda` first on a lent GPU")
def test_smoke_on_cuda(tiny_lm: str, isolated: Path):
    run_smoke("cuda", tiny_lm, isolated)


def test_the_cuda_smoke_also_compiles_coves_scoring():
    """torch.compile'd scoring is one of the switches a long GPU run may use: the smoke step on CUDA turns it
    on where the method has it (CoVE), and the CPU smoke stays quick without it."""
    from bench.runs.smoke import smoke_overrides

    assert "cove.compile_scoring=true" in smoke_overrides("cove", {"compile_scoring": False, "epochs": 3}, "cuda")
    assert not any("compile" in o for o in smoke_overrides("cove", {"compile_scoring": False}, "cpu"))
    assert not any("compile" in o for o in smoke_overrides("bigrec", {"epochs": 3}, "cuda"))


def test_twin_a_smoke_of_one_optimizer_step_is_refused(tiny_lm: str, isolated: Path, monkeypatch: pytest.MonkeyPatch):
    """One step cannot show weights that the step made non-finite, so a smoke cut to one step fails."""
    import bench.runs.smoke as smoke_module
    from bench.errors import BenchError

    torch.set_num_threads(tiny_model_threads())
    monkeypatch.setitem(smoke_module.SMOKE_SETTINGS, "max_train_users", 8)
    with pytest.raises(BenchError, match="smoke cove on cpu: expected 2 optimizer steps, got 1"):
        smoke(["cove"], "cpu", model=tiny_lm, log=lambda _: None)
