"""CoVE plumbing on a tiny random Llama: what trains, prompts, checkpoints, resume, budgets, settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import committed_file, tiny_model_threads
from tiny import killed_at_step, rule_dataset, tiny_backbone

from bench.errors import BenchError
from bench.method import RunContext
from methods.cove.method import CoVEMethod, parse_settings
from methods.cove.prompts import item_token, prompt_texts
from methods.cove.trainer import Sample, batch_loss

DATASET = rule_dataset(num_items=20, num_users=40, length=6, seed=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest single-threaded (and do not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(tiny_model_threads())
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> str:
    folder = tmp_path_factory.mktemp("tiny-lm")
    model, tokenizer = tiny_backbone(prompt_texts(DATASET.catalogue))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def make(tiny_lm: str, work_dir: Path, validate: Any = None, **config: Any) -> CoVEMethod:
    base = {"model": tiny_lm, "epochs": 2, "batch_size": 8, "grad_accum": 2, "learning_rate": 3e-3,
            "warmup_ratio": 0.0, "patience": 0}
    return CoVEMethod({**base, **config}, RunContext(work_dir=work_dir, validate=validate, log=lambda _: None))


def probe_scores(method: CoVEMethod) -> torch.Tensor:
    cases = DATASET.split.test
    return method.score(cases.users[:6], cases.histories[:6])


@pytest.mark.parametrize("loss", ["item", "all_tokens"])
@pytest.mark.parametrize("ratio", [1, 4])
def test_gradients_reach_lora_and_item_tables_only(tiny_lm: str, tmp_path: Path, loss: str, ratio: int):
    method = make(tiny_lm, tmp_path, compression_ratio=ratio, num_hashes=2)
    method._build(DATASET)
    model, enc = method.model, method.encoder
    samples = [Sample(enc.prompt(h), t, enc.training_sequence(h, t)) for h, t in [([1, 2, 3], 4), ([7], 8)]]
    model.train()
    batch_loss(model, samples, loss, method.tokenizer.pad_token_id, "cpu").backward()
    named = dict(model.named_parameters())
    lora = [p for n, p in named.items() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    for table in (model.item_embedding, model.item_head):
        assert table.weight.grad is not None and table.weight.grad.abs().sum() > 0
    frozen = [p for n, p in named.items() if "lora_" not in n and not n.startswith("item_")]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    assert model.causal_lm.get_input_embeddings().weight.grad is None


def test_all_tokens_loss_never_predicts_from_padding(tiny_lm: str, tmp_path: Path):
    """A left-padded batch's loss equals the token-weighted mean of its rows' unpadded losses; with a
    pad position predicting the short row's first token it would not."""
    method = make(tiny_lm, tmp_path)
    method._build(DATASET)
    enc, pad = method.encoder, method.tokenizer.pad_token_id
    short = Sample(enc.prompt([1]), 2, enc.training_sequence([1], 2))
    long = Sample(enc.prompt([3, 4, 5]), 6, enc.training_sequence([3, 4, 5], 6))
    assert len(long.sequence) > len(short.sequence)
    with torch.no_grad():
        both = batch_loss(method.model, [short, long], "all_tokens", pad, "cpu")
        alone = [batch_loss(method.model, [s], "all_tokens", pad, "cpu") for s in (short, long)]
    targets = [len(short.sequence) - 1, len(long.sequence) - 1]
    expected = sum(loss * n for loss, n in zip(alone, targets)) / sum(targets)
    assert both.item() == pytest.approx(expected.item(), rel=1e-4)


def test_prompt_is_the_prefix_of_the_training_text(tiny_lm: str, tmp_path: Path):
    method = make(tiny_lm, tmp_path, max_history=2)
    method._build(DATASET)
    enc, tok = method.encoder, method.tokenizer
    prompt = enc.prompt([5, 6, 7])
    sequence = enc.training_sequence([5, 6, 7], 8)
    assert sequence[:len(prompt)] == prompt and sequence[len(prompt)] == enc.base_vocab + 8
    text = tok.decode(prompt)
    assert item_token(6) in text and item_token(7) in text and item_token(5) not in text  # most recent 2 kept
    assert tok.convert_tokens_to_ids(item_token(19)) == enc.base_vocab + 19
    assert "Instruction" in text and DATASET.catalogue.titles[7].split()[0] in text


def test_id_only_prompts_have_no_titles(tiny_lm: str, tmp_path: Path):
    method = make(tiny_lm, tmp_path, use_titles=False)
    method._build(DATASET)
    prompt = method.encoder.prompt([3, 4])
    comma = method.tokenizer(",", add_special_tokens=False)["input_ids"]
    assert prompt[-2 * (1 + len(comma)):] == [method.encoder.token(3), *comma, method.encoder.token(4), *comma]


def test_checkpoint_reload_gives_identical_scores(tiny_lm: str, tmp_path: Path):
    first = make(tiny_lm, tmp_path / "run", compression_ratio=2)
    first.fit(DATASET)
    before = probe_scores(first)
    assert before.shape == (6, DATASET.num_items) and torch.isfinite(before).all()
    assert committed_file(tmp_path / "run", "last", "cove_progress.json").exists()
    again = make(tiny_lm, tmp_path / "run", compression_ratio=2)
    again.fit(DATASET)  # finished run in the same work_dir: loads it, trains nothing
    assert torch.equal(probe_scores(again), before)
    fresh = make(tiny_lm, tmp_path / "other", compression_ratio=2, epochs=0)
    fresh.fit(DATASET)
    assert not torch.allclose(probe_scores(fresh), before)  # training changed the scores


def test_interrupted_run_resumes_from_last_completed_epoch(tiny_lm: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    whole = make(tiny_lm, tmp_path / "whole", epochs=3)
    whole.fit(DATASET)
    expected = probe_scores(whole)

    from bench.train.lifecycle import TrainingLoop

    original = TrainingLoop._after_epoch

    def crash_in_epoch_two(self: Any, epoch: int, partial: bool) -> bool:
        if epoch == 2:
            raise KeyboardInterrupt
        return original(self, epoch, partial)

    monkeypatch.setattr(TrainingLoop, "_after_epoch", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        make(tiny_lm, tmp_path / "crash", epochs=3).fit(DATASET)
    monkeypatch.setattr(TrainingLoop, "_after_epoch", original)
    logs: list[str] = []
    resumed = make(tiny_lm, tmp_path / "crash", epochs=3)
    resumed.context.log = logs.append
    resumed.fit(DATASET)
    assert any("resumed after epoch 1" in line for line in logs)
    training = resumed.describe()
    assert training["epochs_run"] == 3 and training["resumed_after_epoch"] == 1
    assert training["train_seconds_all_calls"] > 0 and whole.describe()["resumed_after_epoch"] is None
    assert torch.allclose(probe_scores(resumed), expected, atol=1e-5)


def test_a_run_killed_inside_an_epoch_resumes_to_the_uninterrupted_scores(tiny_lm: str, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch):
    """Commits inside an epoch (every COMMIT_EVERY_SECONDS; here after every step): a run killed at its
    third optimizer step (of three in an epoch) resumes at the step after the last commit, optimizer and
    schedule included, and scores as the straight run does."""
    import methods.cove.trainer as trainer_module
    from bench.train import lifecycle

    straight = make(tiny_lm, tmp_path / "straight", epochs=2)
    straight.fit(DATASET)
    monkeypatch.setattr(lifecycle, "COMMIT_EVERY_SECONDS", 1e-9)
    real_step = trainer_module.Trainer.step
    killed_at_step(monkeypatch, trainer_module.Trainer, 3)
    with pytest.raises(KeyboardInterrupt):
        make(tiny_lm, tmp_path / "killed", epochs=2).fit(DATASET)
    monkeypatch.setattr(trainer_module.Trainer, "step", real_step)
    logs: list[str] = []
    resumed = make(tiny_lm, tmp_path / "killed", epochs=2)
    resumed.context.log = logs.append
    resumed.fit(DATASET)
    assert any("step 2 of epoch 1" in line for line in logs), logs
    assert resumed.describe()["optimizer_steps"] == straight.describe()["optimizer_steps"]
    assert torch.allclose(probe_scores(resumed), probe_scores(straight), atol=1e-5)


def test_early_stopping_keeps_the_best_epoch(tiny_lm: str, tmp_path: Path):
    seen: list[torch.Tensor] = []

    def validate(method: CoVEMethod) -> float:
        seen.append(probe_scores(method))
        return [0.5, 0.4, 0.3, 0.2][len(seen) - 1]  # epoch 1 is best

    method = make(tiny_lm, tmp_path, validate=validate, epochs=4, patience=2)
    method.fit(DATASET)
    training = method.describe()
    assert training["stopped_by"] == "early_stopping" and training["epochs_run"] == 3
    assert training["best_epoch"] == 1 and len(seen) == 3
    assert torch.equal(probe_scores(method), seen[0])


def test_time_budget_stops_after_one_step_and_still_scores(tiny_lm: str, tmp_path: Path):
    method = make(tiny_lm, tmp_path, epochs=5, max_train_minutes=1e-9)
    method.fit(DATASET)
    training = method.describe()
    assert training["stopped_by"] == "max_train_minutes" and training["optimizer_steps"] == 1
    assert probe_scores(method).shape == (6, DATASET.num_items)


def test_describe_records_subsample_and_table_sizes(tiny_lm: str, tmp_path: Path):
    method = make(tiny_lm, tmp_path, max_train_users=10, compression_ratio=4, epochs=1, train_samples="all_prefixes")
    method.fit(DATASET)
    info = method.describe()
    assert info["train_subsample"] == {"max_train_users": 10, "seed": 0, "users": 10}
    assert info["train_examples"] == 10 * 3  # 4 training items -> 3 prefixes per user
    assert info["train_mode"] == "all prefixes" and info["loss"] == "item token only"
    assert info["item_table_rows"] == 5 and info["item_table_bytes"] == 2 * 5 * 64 * 4


def test_describe_names_the_sequence_loss(tiny_lm: str, tmp_path: Path):
    info = make(tiny_lm, tmp_path, loss="sequence").describe()
    assert info["train_mode"] == "one sequence per user"
    assert info["loss"] == "item token at every item position"


def test_settings_refuse_bad_values():
    with pytest.raises(BenchError, match=r"\[cove\].loss"):
        parse_settings({"loss": "everything"})
    with pytest.raises(BenchError, match=r"\[cove\].compression_ratio"):
        parse_settings({"compression_ratio": 0})
    with pytest.raises(BenchError, match=r"\[cove\].nope"):
        parse_settings({"nope": 1})
    assert parse_settings({"lora_targets": "q_proj, v_proj"}).lora_targets == ("q_proj", "v_proj")


def test_bench_toml_section_parses_with_the_paper_preset():
    from bench.config import load_config, method_config

    config = load_config()
    default = parse_settings(method_config(config, "cove")["cove"])
    paper = parse_settings(method_config(config, "cove", "paper")["cove"])
    assert default == parse_settings({})  # code defaults mirror bench.toml
    assert default.loss == "item" and default.train_samples == "last"
    assert paper.loss == "all_tokens" and paper.epochs == 14 and len(paper.lora_targets) == 7
    assert paper.batch_size * paper.grad_accum == 32 and paper.lora_dropout == 0.0


def test_sequence_loss_is_the_mean_of_the_prefix_item_losses(tiny_lm: str, tmp_path: Path):
    """One pass over a user's ID-only sequence a, b, c, d scores b, c and d from their prefixes: the
    loss equals the mean of the one-target item losses of [a]->b, [a, b]->c, [a, b, c]->d."""
    method = make(tiny_lm, tmp_path, use_titles=False)
    method._build(DATASET)
    enc, pad = method.encoder, method.tokenizer.pad_token_id
    items = [3, 7, 1, 12]
    whole = Sample(enc.prompt(items[:-1]), items[-1], enc.training_sequence(items[:-1], items[-1]))
    with torch.no_grad():
        sequence = batch_loss(method.model, [whole], "sequence", pad, "cpu")
        prefixes = [batch_loss(method.model, [Sample(enc.prompt(items[:j]), items[j], [])], "item", pad, "cpu")
                    for j in range(1, len(items))]
        # A second, shorter user in the same (left-padded) batch leaves the first user's targets alone.
        short = Sample(enc.prompt([5]), 6, enc.training_sequence([5], 6))
        both = batch_loss(method.model, [whole, short], "sequence", pad, "cpu")
        alone = batch_loss(method.model, [short], "sequence", pad, "cpu")
    assert sequence.item() == pytest.approx(torch.stack(prefixes).mean().item(), rel=1e-4)
    assert both.item() == pytest.approx((3 * sequence.item() + alone.item()) / 4, rel=1e-4)


def test_length_bucketed_scoring_returns_scores_in_request_order(tiny_lm: str, tmp_path: Path):
    cases = DATASET.split.test
    histories = [cases.histories[0][:1], cases.histories[1], cases.histories[2][:2], cases.histories[3]]
    plain = make(tiny_lm, tmp_path / "a", epochs=0)
    plain.fit(DATASET)
    bucketed = make(tiny_lm, tmp_path / "b", epochs=0, length_buckets=2)
    bucketed.fit(DATASET)
    assert len({len(bucketed.encoder.prompt(h)) for h in histories}) > 1
    expected = plain.score([0, 1, 2, 3], histories)
    assert torch.allclose(bucketed.score([0, 1, 2, 3], histories), expected, atol=1e-5)
    assert bucketed.describe()["scoring_padding_fraction"] < plain.describe()["scoring_padding_fraction"]


def test_scoring_chunks_bound_padding_and_cover_every_request_once():
    from methods.cove.scoring import scoring_chunks

    lengths = [40, 3, 5, 38, 4, 50, 6, 41, 3, 39]
    plain = scoring_chunks(lengths, 4)
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # request order, eval_batch_size at a time
    sorted_only = scoring_chunks(lengths, 32, length_buckets=32)
    assert sorted_only == [sorted(range(10), key=lambda i: lengths[i])]  # one forward: 51% of it padding
    bounded = scoring_chunks(lengths, 32, length_buckets=32, max_padding=0.25)
    assert sorted(i for chunk in bounded for i in chunk) == list(range(10))
    for chunk in bounded:
        width = max(lengths[i] for i in chunk)
        assert width * len(chunk) - sum(lengths[i] for i in chunk) <= 0.25 * width * len(chunk)
    assert [len(chunk) for chunk in bounded] == [4, 1, 5]  # 3-5 tokens, then 6 alone, then 38-50
    capped = scoring_chunks(lengths, 32, length_buckets=3, max_padding=0.25)
    assert max(len(chunk) for chunk in capped) == 3


def test_padding_bounded_scoring_gives_the_same_top_20(tiny_lm: str, tmp_path: Path):
    cases = DATASET.split.test
    users = list(range(len(cases)))
    histories = [h[:1 + (i * 7) % max(1, len(h))] for i, h in enumerate(cases.histories)]  # mixed lengths
    plain = make(tiny_lm, tmp_path / "a", epochs=0)
    plain.fit(DATASET)
    bounded = make(tiny_lm, tmp_path / "b", epochs=0, length_buckets=32, max_padding=0.1)
    bounded.fit(DATASET)
    expected, got = plain.score(users, histories), bounded.score(users, histories)
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.equal(torch.topk(got, 20).indices, torch.topk(expected, 20).indices)
    assert bounded.describe()["scoring_padding_fraction"] <= 0.1 < plain.describe()["scoring_padding_fraction"]
    # The same real tokens per request either way; only the padding differs.
    assert bounded.describe()["tokens_per_request"] == plain.describe()["tokens_per_request"] > 1


def test_bf16_precision_keeps_scores_close_and_trainable_parts_fp32(tiny_lm: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch):
    """bf16 (forced here, emulated where the CPU lacks it) stores the frozen weights in bf16 and runs
    under autocast; LoRA, item tables and item logits stay fp32, and the ranking barely moves."""
    import bench.train.precision

    monkeypatch.setattr(bench.train.precision, "cpu_supports_bf16", lambda: True)
    full = make(tiny_lm, tmp_path / "fp32", epochs=0)
    full.fit(DATASET)
    half = make(tiny_lm, tmp_path / "bf16", epochs=0, precision="bf16")
    half.fit(DATASET)
    assert half.describe()["precision"] == "bf16" and full.describe()["precision"] == "fp32"
    named = dict(half.model.named_parameters())
    assert named["item_head.weight"].dtype == named["item_embedding.weight"].dtype == torch.float32
    assert all(p.dtype == torch.float32 for n, p in named.items() if "lora_" in n)
    frozen = [p for n, p in named.items() if not p.requires_grad and not n.startswith("item_")]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    a, b = probe_scores(full), probe_scores(half)
    assert b.dtype == torch.float32
    assert (a - b).abs().max() < 0.05 * a.abs().max()
    top = a.topk(5).indices
    assert (b.gather(1, top).min(1).values > b.median(1).values).all()  # fp32's top 5 stay in bf16's top half
    monkeypatch.setattr(bench.train.precision, "cpu_supports_bf16", lambda: False)
    notices: list[str] = []
    fallback = make(tiny_lm, tmp_path / "auto", epochs=0, precision="auto")
    fallback.context.log = notices.append
    fallback.fit(DATASET)
    assert fallback.describe()["precision"] == "fp32" and "no native bf16" in notices[0]


def test_training_attention_is_eager_on_a_bf16_cpu_and_for_left_padded_cuda_batches_unless_asked():
    """CoVE left-pads its training batches; on CUDA SDPA's backward gave NaN gradients for the padding rows
    (H200 run, 2026-12-04), so "auto" trains CoVE eager there; right-padded trainers keep the model's kernel."""
    from bench.train.precision import training_attention

    assert training_attention("auto", "cpu", "bf16") == "eager"
    assert training_attention("auto", "cpu", "fp32") is None and training_attention("auto", "cuda", "bf16") is None
    assert training_attention("auto", "cuda:1", "bf16", left_padded=True) == "eager"
    assert training_attention("auto", "cpu", "fp32", left_padded=True) is None
    assert training_attention("sdpa", "cuda", "bf16", left_padded=True) == "sdpa"
    assert training_attention("sdpa", "cpu", "bf16") == "sdpa"
    assert training_attention("eager", "cuda", "bf16") == "eager"


def test_eager_and_sdpa_training_give_the_same_model(tiny_lm: str, tmp_path: Path):
    """The attention kernel is a speed switch: in fp32 both kernels train the same weights (to rounding),
    the record names the one used, and scoring goes back to the model's own kernel after training."""
    runs = {}
    for kernel in ("sdpa", "eager"):
        method = make(tiny_lm, tmp_path / kernel, loss="sequence", train_attention=kernel)
        method.fit(DATASET)
        assert method.describe()["train_attention"] == kernel
        assert method.model.causal_lm.config._attn_implementation == "sdpa"  # as loaded
        runs[kernel] = probe_scores(method)
    assert torch.allclose(runs["sdpa"], runs["eager"], atol=1e-4, rtol=1e-4)
    changed = make(tiny_lm, tmp_path / "lr", loss="sequence", train_attention="eager", learning_rate=3e-2)
    changed.fit(DATASET)  # the twin: a real change of training does move the scores
    assert not torch.allclose(runs["sdpa"], probe_scores(changed), atol=1e-4, rtol=1e-4)


def test_compiled_scoring_gives_the_same_top_20_as_eager(tiny_lm: str, tmp_path: Path):
    """compile_scoring is a speed switch: the same trained weights score the same (fp32, to rounding) through
    torch.compile, also for a second prompt shape (the shape-generic graph), and the record says which."""
    trained = make(tiny_lm, tmp_path / "run", loss="sequence", length_buckets=4, eval_batch_size=8)
    trained.fit(DATASET)
    compiled = make(tiny_lm, tmp_path / "run", loss="sequence", length_buckets=4, eval_batch_size=8,
                    compile_scoring=True)
    compiled.context.resume_only = True
    compiled.fit(DATASET)
    cases = DATASET.split.test
    for users in (list(range(12)), list(range(12, 30))):  # two batches of other shapes
        eager = trained.score(users, [cases.histories[u] for u in users])
        fast = compiled.score(users, [cases.histories[u] for u in users])
        assert torch.allclose(eager, fast, atol=1e-4, rtol=1e-4)
        assert torch.equal(eager.topk(20).indices.sort().values, fast.topk(20).indices.sort().values)
    assert compiled.describe()["scoring_forward"] == "torch.compile"
    assert trained.describe()["scoring_forward"] == "eager"


@pytest.mark.parametrize("ratio", [1, 4])
def test_streamed_ranking_in_item_chunks_gives_the_same_ranks(tiny_lm: str, tmp_path: Path, ratio: int):
    """bench.runs.evaluate ranks a method with encode/score_items a slice of the catalogue at a time (for
    catalogues of millions): exactly the ranks of the full score matrix, masked history included."""
    from bench.runs.evaluate import evaluate

    method = make(tiny_lm, tmp_path, epochs=1, compression_ratio=ratio)
    method.fit(DATASET)
    cases = DATASET.split.test
    for mask in (False, True):
        whole = evaluate(method, cases, DATASET.num_items, ks=(1, 5, 10), mask_history=mask, progress=False)
        streamed = evaluate(method, cases, DATASET.num_items, ks=(1, 5, 10), mask_history=mask, progress=False,
                            item_chunk=3)
        assert np.array_equal(whole.ranks, streamed.ranks) and whole.metrics == streamed.metrics


def test_huge_catalogues_skip_tokenizer_entries_but_keep_the_same_prompts(tiny_lm: str, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    import methods.cove.prompts as prompts

    small = make(tiny_lm, tmp_path / "a", epochs=0)
    small.fit(DATASET)
    monkeypatch.setattr(prompts, "TOKENIZER_ITEM_LIMIT", 5)  # this catalogue (20 items) counts as huge
    huge = make(tiny_lm, tmp_path / "b", epochs=0)
    huge.fit(DATASET)
    assert small.describe()["item_tokens_in_tokenizer"] and not huge.describe()["item_tokens_in_tokenizer"]
    assert len(huge.tokenizer) < len(small.tokenizer)
    history = DATASET.split.test.histories[0]
    assert huge.encoder.prompt(history) == small.encoder.prompt(history)
    assert torch.equal(probe_scores(huge), probe_scores(small))
