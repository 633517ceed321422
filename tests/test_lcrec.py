"""LC-Rec on a tiny random Llama: item codes as new tokens, a learning test with a twin that cannot learn,
decoding that never leaves the catalogue, and a finished run reloaded without training."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import tiny
from conftest import tiny_model_threads
from tiny import rule_dataset

from bench.errors import BenchError
from bench.method import RunContext, seed_everything
from bench.runs.evaluate import evaluate
from methods.lcrec.codes import add_code_tokens, code_token
from methods.lcrec.prompts import INSTRUCTION, SEPARATOR, PromptPieces
from methods.lcrec.settings import parse_settings
from methods.semantic_ids.trie import CatalogueTrie

torch = pytest.importorskip("torch")

# Settings under which the tiny model learns in a minute: short histories, LoRA on every linear layer. Measured
# on the `next` rule at 1 and 2 threads: lr 2e-3 and 3e-3 x 80 epochs reach HR@1 1.0 (loss .015 / .005); the
# loss sits at the codes' marginal (~0.9) for ~20 epochs first, and lr 4e-3 never leaves it, 25 epochs are too few.
TINY = dict(model="tiny", max_history=2, lora_rank=16, lora_alpha=32, lora_dropout=0.0,
            lora_targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            learning_rate=2e-3, batch_size=16, grad_accum=1, epochs=80, warmup_steps=5, beam_size=5,
            eval_batch_size=64, precision="fp32")


def random_codes(num_items: int, seed: int = 0) -> np.ndarray:
    """Distinct 2-level codes + a collision digit: the shape of TIGER's IDs, without MiniLM or an RQ-VAE."""
    rng = np.random.default_rng(seed)
    codes = set()
    while len(codes) < num_items:
        codes.add((int(rng.integers(4)), int(rng.integers(4))))
    return np.array([[a, b, 0] for a, b in sorted(codes, key=lambda _: rng.random())])


@pytest.fixture
def tiny_lcrec(monkeypatch: pytest.MonkeyPatch, isolated: Path) -> Any:
    """A random tiny Llama with a word-level tokenizer, and random semantic IDs."""
    import bench.train.backbone
    import methods.semantic_ids.catalogue

    def load(spec: str, device: str, cache_dir: Path, dtype: Any = None) -> tuple[Any, Any]:
        assert spec == "tiny"
        model, tokenizer = tiny.tiny_backbone([INSTRUCTION + SEPARATOR], seed=0)
        return model.to(device), tokenizer

    def ids(dataset: Any, settings: Any, cache_dir: Path, **_: Any) -> tuple[np.ndarray, dict[str, Any]]:
        return random_codes(dataset.num_items), {"file": "random.npy"}

    monkeypatch.setattr(bench.train.backbone, "load_backbone", load)
    monkeypatch.setattr(methods.semantic_ids.catalogue, "catalogue_semantic_ids", ids)
    threads = torch.get_num_threads()
    torch.set_num_threads(tiny_model_threads())
    yield
    torch.set_num_threads(threads)


def make(config: dict[str, Any], work_dir: Path, **context: Any) -> Any:
    from methods.lcrec.method import LCRecMethod

    seed_everything(0)
    return LCRecMethod(config, RunContext(**{"work_dir": work_dir, "log": lambda _: None, **context}))


@pytest.mark.parametrize("rule", ["next", "random"])
def test_tiny_llama_learns_the_next_items_code_only_when_learnable(rule: str, tiny_lcrec: None, tmp_path: Path):
    dataset = rule_dataset(num_items=12, num_users=150, length=6, rule=rule, seed=0)
    method = make(TINY, tmp_path / "work")
    method.fit(dataset)
    result = evaluate(method, dataset.split.test, dataset.num_items, ks=(1, 5), progress=False)
    if rule == "next":
        assert result.metrics["hr@1"] > 0.7
    else:
        assert result.metrics["hr@1"] < 0.3  # chance is 1/12
    info = method.describe()
    assert info["id_length"] == 3 and info["generated_tokens_per_sample"] == 3
    assert info["code_tokens_added"] == len(np.unique(random_codes(12)[:, 0])) + len(
        np.unique(random_codes(12)[:, 1])) + 1
    assert info["epochs_run"] == 80 and any("sequential task only" in d for d in info["deviations"])


def test_every_ranked_item_comes_from_a_whole_catalogue_code(tiny_lcrec: None, tmp_path: Path):
    """Untrained, so the model would write anything: the trie keeps all 5 beams on catalogue items, the scores
    order them, and everything else ties below."""
    dataset = rule_dataset(num_items=12, num_users=20, length=5, rule="next", seed=1)
    method = make({**TINY, "epochs": 0}, tmp_path / "work")  # untrained
    method.fit(dataset)
    assert method.describe()["tokens_per_request"] is None  # nothing scored yet
    scores = method.score([0, 1, 2], [[0, 1], [5], [3, 4, 5]])
    assert scores.shape == (3, 12)
    # What a request cost: its prompt once, then 3 code steps on each of 5 beams; the shortest prompt was padded.
    prompts = [len(method.pieces.request(h, TINY.get("max_history", 50))) for h in ([0, 1], [5], [3, 4, 5])]
    info = method.describe()
    assert info["prompt_tokens_per_request"] == round(sum(prompts) / 3, 2)
    assert info["tokens_per_request"] == round(sum(prompts) / 3 + 3 * 5, 2)
    assert info["scoring_padding_fraction"] == round(1 - sum(prompts) / (3 * max(prompts)), 4) > 0
    for row in scores:
        ranked = row[torch.isfinite(row)]
        assert len(ranked) == 5 and len(set(ranked.tolist())) == 5


def test_a_run_on_some_users_says_so_and_a_run_on_all_does_not(tiny_lcrec: None, tmp_path: Path):
    dataset = rule_dataset(num_items=12, num_users=20, length=5, rule="next", seed=1)
    some = make({**TINY, "epochs": 0, "max_train_users": 5}, tmp_path / "some")
    some.fit(dataset)
    assert some.describe()["train_subsample"] == {"max_train_users": 5, "seed": 0, "users": 5}
    every = make({**TINY, "epochs": 0, "max_train_users": 20}, tmp_path / "every")  # 20 users: all of them
    every.fit(dataset)
    assert "train_subsample" not in every.describe()


def test_length_buckets_keep_every_example_once_and_cut_padding(tmp_path: Path):
    from bench.train.lora_trainer import LoRATrainer, TrainExample

    lengths = [int(n) for n in np.random.default_rng(0).integers(2, 200, size=300)]
    examples = [TrainExample([1] * n, [1] * n) for n in lengths]

    def epoch(buckets: bool, number: int = 0) -> list[list[list[int]]]:
        settings = SimpleNamespace(learning_rate=1e-3, batch_size=16, grad_accum=2, warmup_steps=1, epochs=2,
                                   patience=0, length_buckets=buckets)
        return LoRATrainer(torch.nn.Linear(2, 2), 0, examples, settings, tmp_path / str(buckets), {}, name="toy",
                           seed=0, device="cpu", precision="fp32", budget_minutes=None).epoch_steps(number)

    def padded(steps: list[list[list[int]]]) -> int:
        return sum(max(lengths[e] for e in micro) * len(micro) for step in steps for micro in step)

    plain, bucketed = epoch(False), epoch(True)
    assert sorted(e for step in bucketed for micro in step for e in micro) == list(range(300))
    assert all(len(step) <= 2 and all(len(micro) <= 16 for micro in step) for step in bucketed)
    assert padded(bucketed) < 0.6 * padded(plain)
    assert epoch(True) == bucketed and epoch(True, 1) != bucketed  # a resume rebuilds it; the next epoch differs


class TokenMeanLM(torch.nn.Module):
    """Loss: the mean over labelled next tokens of (w[token] - label)^2, so its gradient shows how each token
    was weighed."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.arange(8, dtype=torch.float32) / 8)
        self.config = SimpleNamespace(_attn_implementation="eager")

    def forward(self, input_ids: Any, labels: Any, attention_mask: Any) -> Any:
        target = labels[:, 1:]
        labelled = target != -100
        return SimpleNamespace(loss=((self.w[input_ids[:, :-1]] - target.clamp(min=0)) ** 2)[labelled].mean())


@pytest.mark.parametrize("grouped", [True, False])
def test_a_step_of_length_grouped_micro_batches_is_its_token_mean(grouped: bool, tmp_path: Path):
    """Grouped by length, a micro-batch of short sequences must not weigh as much as one of long ones: the step's
    gradient is the token mean of all its examples, as one batch. Random micro-batches keep the mean of their
    means, which differs here (the twin)."""
    from bench.train.lora_trainer import LoRATrainer, TrainExample, collate

    lengths = [2, 3, 20, 24, 40, 41]
    examples = [TrainExample([(i + j) % 8 for j in range(n)], [(i * j) % 5 for j in range(n)])
                for i, n in enumerate(lengths)]
    settings = SimpleNamespace(learning_rate=1e-3, batch_size=2, grad_accum=3, warmup_steps=1, epochs=1, patience=0,
                               length_buckets=grouped)
    model = TokenMeanLM()
    trainer = LoRATrainer(model, 0, examples, settings, tmp_path / "work", {}, name="toy", seed=0, device="cpu",
                          precision="fp32", budget_minutes=None)
    window = [[0, 1], [2, 3], [4, 5]]
    for positions, share in zip(window, trainer.micro_batch_shares(window)):
        trainer._backward(positions, share)
    stepped = model.w.grad.clone()
    model.w.grad = None
    model(**collate(examples, 0)).loss.backward()
    assert torch.allclose(stepped, model.w.grad, atol=1e-6) == grouped


def test_a_finished_run_reloads_its_adapter_and_code_embeddings(tiny_lcrec: None, tmp_path: Path):
    """resume_only (bench evaluate, speed --trained): the same scores without training, LoRA and the new
    tokens' trained rows both restored (a reload starts from their initial rows, which training moved)."""
    dataset = rule_dataset(num_items=12, num_users=60, length=5, rule="next", seed=2)
    first = make({**TINY, "epochs": 3}, tmp_path / "run")
    first.fit(dataset)
    histories = [[0, 1], [7, 8], [3]]
    again = make({**TINY, "epochs": 3}, tmp_path / "run", resume_only=True)
    again.fit(dataset)
    assert torch.equal(again.score([0, 1, 2], histories), first.score([0, 1, 2], histories))
    with pytest.raises(BenchError, match="no finished lcrec training"):
        make({**TINY, "epochs": 3}, tmp_path / "empty", resume_only=True).fit(dataset)


def test_codes_become_tokens_and_the_trie_knows_the_catalogue():
    _, tokenizer = tiny.tiny_backbone([INSTRUCTION], seed=0)
    ids = np.array([[0, 3, 0], [0, 3, 1], [2, 1, 0]])
    tokens = add_code_tokens(tokenizer, ids)
    assert tokenizer.convert_ids_to_tokens(tokens[1].tolist()) == ["<a_0>", "<b_3>", "<c_1>"]
    written = tokenizer(code_token(0, 2) + code_token(1, 1), add_special_tokens=False)["input_ids"]
    assert written == tokens[2][:2].tolist()
    trie = CatalogueTrie(tokens)
    assert trie.items(torch.as_tensor(tokens)).tolist() == [0, 1, 2]
    assert trie.items(torch.as_tensor([[tokens[0][0], tokens[2][1], tokens[0][2]]])).tolist() == [-1]
    with pytest.raises(BenchError, match="already has"):
        add_code_tokens(tokenizer, ids)
    with pytest.raises(BenchError, match="share a semantic ID"):
        CatalogueTrie(np.array([[5, 6], [5, 6]]))


def test_the_request_prompt_is_the_training_sequences_prefix():
    _, tokenizer = tiny.tiny_backbone([INSTRUCTION + SEPARATOR], seed=0)
    tokens = add_code_tokens(tokenizer, np.array([[0, 1, 0], [1, 0, 0], [1, 1, 0]]))
    pieces = PromptPieces.build(tokenizer, tokens)
    example = pieces.training_sequence([0, 1, 2], max_history=5)
    request = pieces.request([0, 1], max_history=5)
    assert example.input_ids[:len(request)] == request
    assert example.input_ids[len(request):] == tokens[2].tolist()
    labelled = [t for t, label in zip(example.input_ids, example.labels) if label != -100]
    assert labelled == tokens[1].tolist() + tokens[2].tolist()  # every item after the first, codes only
    assert pieces.request([0, 1, 2], max_history=1) == pieces.instruction + tokens[2].tolist() + pieces.separator


def test_settings_are_checked_before_anything_loads():
    assert parse_settings({}).beam_size == 20
    with pytest.raises(BenchError, match=r"\[lcrec\]\.levels: expected at most 7"):
        parse_settings({"levels": 8})
    with pytest.raises(BenchError, match=r"\[lcrec\]\.precision"):
        parse_settings({"precision": "fp8"})


def test_an_untied_output_head_trains_its_code_rows_too(tiny_lcrec: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    """Backbones with a separate lm_head (Llama-3-8B, Qwen3-8B): the new tokens' output rows must train as well,
    or every code token keeps its initial, near-identical logit row."""
    from transformers import LlamaForCausalLM

    import bench.train.backbone

    def untied(spec: str, device: str, cache_dir: Path, dtype: Any = None) -> tuple[Any, Any]:
        model, tokenizer = tiny.tiny_backbone([INSTRUCTION + SEPARATOR], seed=0)
        config = model.config
        config.tie_word_embeddings = False
        torch.manual_seed(0)
        return LlamaForCausalLM(config).eval(), tokenizer

    monkeypatch.setattr(bench.train.backbone, "load_backbone", untied)
    dataset = rule_dataset(num_items=12, num_users=30, length=5, rule="next", seed=3)
    method = make({**TINY, "epochs": 1}, tmp_path / "work")
    method.fit(dataset)
    trainable = [name for name, p in method.model.named_parameters() if p.requires_grad and "lora" not in name]
    assert any("embed_tokens" in name for name in trainable) and any("lm_head" in name for name in trainable)


def test_the_lora_trainer_trains_with_the_attention_kernel_asked(tiny_lcrec: None, tmp_path: Path):
    """train_attention is a speed switch on the shared LoRA trainer (BIGRec, LC-Rec): in fp32 the eager and
    SDPA kernels train the same adapter (to rounding), the record names the kernel, and decoding goes back to
    the model's own; a real change of training (the twin) does move the scores."""
    dataset = rule_dataset(num_items=12, num_users=60, length=5, rule="next", seed=2)
    histories = [[0, 1], [7, 8], [3]]
    scores = {}
    for kernel in ("sdpa", "eager"):
        method = make({**TINY, "epochs": 3, "train_attention": kernel}, tmp_path / kernel)
        method.fit(dataset)
        assert method.describe()["train_attention"] == kernel
        assert method.model.config._attn_implementation == "sdpa"
        scores[kernel] = method.score([0, 1, 2], histories)
    assert torch.allclose(scores["sdpa"], scores["eager"], atol=1e-4, rtol=1e-4)
    other = make({**TINY, "epochs": 3, "train_attention": "eager", "learning_rate": 1e-2}, tmp_path / "lr")
    other.fit(dataset)
    assert not torch.allclose(scores["sdpa"], other.score([0, 1, 2], histories), atol=1e-4, rtol=1e-4)
