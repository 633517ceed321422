"""TIGER: unique semantic IDs, decoding that only ever returns catalogue items, and a T5 that learns a
rule over semantic IDs (and stays at chance without one)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_model_threads
from tiny import rule_dataset

from bench.errors import BenchError
from bench.method import RunContext, seed_everything
from bench.runs.evaluate import evaluate

torch = pytest.importorskip("torch")

from methods.semantic_ids.ids import id_statistics, with_collision_digit  # noqa: E402
from methods.semantic_ids.rqvae import train_rqvae  # noqa: E402
from methods.semantic_ids.trie import CatalogueTrie, TrieConstraint  # noqa: E402
from methods.tiger.model import EOS, TokenLayout, build_t5  # noqa: E402
from methods.tiger.settings import parse_settings  # noqa: E402

SMALL = dict(levels=2, codebook_size=8, latent_dim=8, rqvae_hidden=[32], rqvae_epochs=200, max_history=3,
             user_tokens=0, d_model=32, num_layers=1, num_heads=2, d_kv=16, d_ff=64, dropout=0.0,
             learning_rate=0.01, warmup_steps=10, batch_size=32, beam_size=5, eval_batch_size=64)


@pytest.fixture(autouse=True)
def isolated_cache(isolated: Path) -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(tiny_model_threads())
    yield
    torch.set_num_threads(threads)


def make(work_dir: Path, **settings: Any) -> Any:
    from methods.tiger.method import TigerMethod

    seed_everything(0)
    return TigerMethod({**SMALL, **settings}, RunContext(work_dir=work_dir, log=lambda _: None))


def test_collision_digit_makes_every_id_unique_and_is_counted():
    codes = np.array([[1, 2], [1, 2], [3, 4], [1, 2], [3, 5]])
    ids = with_collision_digit(codes)
    assert ids[:, -1].tolist() == [0, 1, 0, 2, 0]
    assert len({tuple(row) for row in ids.tolist()}) == 5
    stats = id_statistics(ids, codebook_size=8)
    assert stats["collision_rate"] == 0.6 and stats["max_items_per_code"] == 3 and stats["digit_range"] == 3
    assert stats["codebook_use"] == [2 / 8, 3 / 8]


def test_rqvae_codes_separate_distinct_points():
    torch.manual_seed(0)
    centres = torch.randn(16, 12) * 3
    points = torch.cat([centres + 0.01 * torch.randn(16, 12) for _ in range(3)])
    model, losses = train_rqvae(points, [32], 8, 2, 16, 0.25, epochs=100, lr=0.003, batch_size=64, seed=0)
    codes = model.codes(points)
    assert len({tuple(c) for c in codes[:16].tolist()}) >= 12  # distinct centres mostly get distinct codes
    assert (codes[:16] == codes[16:32]).all(dim=1).float().mean() > 0.8  # near points share their code
    assert losses["reconstruction_sse"] < points.var().item()


@pytest.mark.parametrize("seed", range(5))
def test_constrained_beam_search_returns_only_catalogue_items(seed: int):
    """Property test over random catalogues and random (untrained) T5s: every beam is a valid, distinct
    catalogue ID, including beams wider than some prefixes' fan-out."""
    from transformers import LogitsProcessorList

    rng = np.random.default_rng(seed)
    ids = with_collision_digit(rng.integers(0, 4, size=(int(rng.integers(12, 40)), 2)))
    layout = TokenLayout((4, 4, int(ids[:, -1].max()) + 1), user_buckets=0)
    tokens = layout.item_tokens(ids)
    trie = CatalogueTrie(tokens)
    torch.manual_seed(seed)
    model = build_t5(layout, 32, 1, 2, 16, 64, 0.0).eval()
    beams = min(10, len(ids))
    histories = [rng.integers(0, len(ids), size=3).tolist() for _ in range(4)]
    inputs = torch.tensor([layout.encoder_input(0, h, tokens, 3) for h in histories])
    out = model.generate(input_ids=inputs, num_beams=beams, num_return_sequences=beams, max_new_tokens=3,
                         logits_processor=LogitsProcessorList([TrieConstraint(trie, 1, EOS)]), do_sample=False,
                         return_dict_in_generate=True, output_scores=True)
    items = trie.items(out.sequences[:, 1:4]).view(len(histories), beams)
    assert (items >= 0).all()
    assert all(len(set(row)) == beams for row in items.tolist())
    assert all(tuple(tokens[i]) == tuple(row)
               for i, row in zip(items.reshape(-1).tolist(), out.sequences[:, 1:4].tolist()))
    assert torch.isfinite(out.sequences_scores).all()


def test_rqvae_training_reduces_reconstruction_and_repeats_under_a_seed():
    torch.manual_seed(0)
    centres = torch.randn(20, 24) * 2
    points = centres.repeat(10, 1) + 0.1 * torch.randn(200, 24)  # 20 clusters: compressible into codes
    _, untrained = train_rqvae(points, [32], 8, 2, 16, 0.25, epochs=1, lr=0.003, batch_size=64, seed=3)
    first, trained = train_rqvae(points, [32], 8, 2, 16, 0.25, epochs=60, lr=0.003, batch_size=64, seed=3)
    second, _ = train_rqvae(points, [32], 8, 2, 16, 0.25, epochs=60, lr=0.003, batch_size=64, seed=3)
    assert trained["reconstruction_sse"] < 0.7 * untrained["reconstruction_sse"]
    assert torch.equal(first.codes(points), second.codes(points))


def test_rq_kmeans_codes_recover_planted_clusters_and_explain_more_with_each_level():
    from methods.semantic_ids.rqkmeans import rq_kmeans

    torch.manual_seed(0)
    centres = torch.randn(8, 12) * 4
    points = torch.cat([centres + 0.05 * torch.randn(8, 12) for _ in range(4)])  # 4 near copies of 8 centres
    one, one_facts = rq_kmeans(points, 1, 8, seed=0)
    two, two_facts = rq_kmeans(points, 2, 8, seed=0)
    assert one.shape == (32, 1) and two.shape == (32, 2)
    first = one[:, 0].view(4, 8)
    assert (first == first[0]).all() and len(set(first[0].tolist())) == 8  # each planted cluster one code
    assert two_facts["unexplained_variance"] < one_facts["unexplained_variance"] < 0.01
    assert torch.equal(rq_kmeans(points, 2, 8, seed=0)[0], two)  # repeats under a seed


def test_rq_kmeans_ids_are_an_option_with_their_own_cache_and_facts(tmp_path: Path):
    from methods.semantic_ids.catalogue import RQVAESettings

    dataset = rule_dataset(num_items=20, num_users=30, length=5, rule="next", seed=0)
    plain = make(tmp_path / "a", epochs=0)
    plain.fit(dataset)
    kmeans = make(tmp_path / "b", epochs=0, semantic_ids="rqkmeans")
    kmeans.fit(dataset)
    facts = kmeans.describe()["semantic_ids"]
    assert facts["quantiser"] == "rqkmeans" and plain.describe()["semantic_ids"]["quantiser"] == "rqvae"
    assert facts["file"] != plain.describe()["semantic_ids"]["file"] and 0 <= facts["unexplained_variance"] < 1
    assert facts["items"] == 20 and 0 <= facts["collision_rate"] <= 1 and len(facts["codebook_use"]) == 2
    scores = kmeans.score([0], [[1, 2]])
    assert int(torch.isfinite(scores).sum()) == 5  # beams over the rqkmeans catalogue
    # The RQ-VAE's cache key is what it was before other quantisers existed (cached IDs stay found).
    rqvae = RQVAESettings(("title",), [512, 256, 128], 32, 3, 256, 0.25, 200, 0.001, 1024)
    assert rqvae.key(0) == {"hidden": [512, 256, 128], "latent_dim": 32, "levels": 3, "codebook_size": 256,
                            "beta": 0.25, "epochs": 200, "lr": 0.001, "batch_size": 1024, "seed": 0}
    with pytest.raises(BenchError, match=r"\[tiger\]\.semantic_ids"):
        parse_settings({"semantic_ids": "kmeans"})


@pytest.mark.parametrize("rule", ["next", "random"])
def test_tiger_learns_the_chain_only_when_there_is_one(rule: str, tmp_path: Path):
    dataset = rule_dataset(num_items=20, num_users=200, length=6, rule=rule, seed=0)
    method = make(tmp_path, epochs=25, patience=0)
    method.fit(dataset)
    result = evaluate(method, dataset.split.test, dataset.num_items, ks=(1, 5), progress=False)
    if rule == "next":
        assert result.metrics["hr@1"] > 0.8
    else:
        assert result.metrics["hr@1"] < 0.25  # chance is 0.05
    info = method.describe()
    assert info["id_length"] == 3 and info["semantic_ids"]["items"] == 20
    assert info["ranking"].startswith("top-5 by beam search")
    scores = method.score([0, 1], [[1, 2], [5]])
    assert (torch.isfinite(scores).sum(dim=1) == 5).all()  # the beam's items; the rest tie at -inf


def test_settings_refuse_bad_values():
    with pytest.raises(BenchError, match=r"\[tiger\]\.encoder"):
        parse_settings({"encoder": "sentence-t5"})
    with pytest.raises(BenchError, match=r"\[tiger\]\.rqvae_hidden"):
        parse_settings({"rqvae_hidden": [64, 0]})
    with pytest.raises(BenchError, match=r"\[tiger\]\.beam_size"):
        parse_settings({"beam_size": 0})
    from bench.config import load_config, method_config

    assert parse_settings(method_config(load_config(), "tiger")["tiger"]).hidden_widths == [512, 256, 128]


def test_learning_rate_schedules_warm_up_then_decay_or_hold():
    """The paper's inverse-sqrt after warm-up, or GRID's constant rate (the gpu preset), and a bad name refused."""
    from methods.tiger.method import lr_factor

    paper, constant = lr_factor(100, "inverse_sqrt"), lr_factor(100, "constant")
    assert paper(0) == constant(0) == 0.01 and paper(99) == constant(99) == 1.0
    assert paper(399) == pytest.approx(0.5) and constant(399) == 1.0 and constant(10**6) == 1.0
    with pytest.raises(BenchError, match=r"\[tiger\]\.schedule"):
        parse_settings({"schedule": "cosine"})
    from bench.config import load_config, method_config

    gpu = parse_settings(method_config(load_config(), "tiger", "gpu")["tiger"])
    assert gpu.schedule == "constant" and gpu.t5_shape == (4, 128, 6, 64, 1024)


@pytest.mark.parametrize("restart", [True, False])
def test_unused_code_restarts_keep_ids_spread_out(restart: bool, monkeypatch: pytest.MonkeyPatch):
    """Text-embedding-like inputs (unit vectors in 384 dimensions): with restarts most codes stay in use
    and few items collide; the twin without restarts collapses onto a few codes."""
    from methods.semantic_ids.rqvae import RQVAE

    if not restart:
        monkeypatch.setattr(RQVAE, "restart_unused_codes", lambda self, x, generator=None: 0)
    torch.manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(400, 384) + 2.0, dim=1)
    model, _ = train_rqvae(vectors, [128, 64], 16, 2, 32, 0.25, epochs=60, lr=0.001, batch_size=128, seed=0)
    stats = id_statistics(with_collision_digit(model.codes(vectors).numpy()), codebook_size=32)
    # Seeds 0-2: with restarts use 1.0 and collisions 0.50-0.52 (400 items in 32 x 32 codes); without,
    # use 0.53-0.66 and collisions 0.85-0.90.
    if restart:
        assert stats["codebook_use"][0] >= 0.9 and stats["collision_rate"] < 0.65
    else:
        assert stats["codebook_use"][0] < 0.75 and stats["collision_rate"] > 0.75


def test_text_fields_choose_what_the_semantic_id_encoder_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Default: the title alone (the same text, hence the same cached IDs, as before the option existed);
    with text_fields the card's item text is added; a bad list is refused by name."""
    import dataclasses

    import methods.semantic_ids.ids as semantic_ids

    base = rule_dataset(num_items=4, num_users=10, length=4, rule="next", seed=0)
    text = [{"brand": f"B{i}", "categories": ["Beauty", "Skin"]} if i % 2 == 0 else {} for i in range(4)]
    dataset = dataclasses.replace(base, catalogue=dataclasses.replace(base.catalogue, text=text))
    seen: list[list[str]] = []
    monkeypatch.setattr(semantic_ids, "cache_key", lambda encoder, texts, rq: seen.append(texts) or "key")
    monkeypatch.setattr(semantic_ids, "load_or_build", lambda path, build: (np.zeros((4, 3), int), {}, True))
    make(tmp_path)._semantic_ids(dataset)
    assert seen[-1] == [dataset.catalogue.title_or(i) for i in range(4)]
    method = make(tmp_path, text_fields=["title", "brand", "categories"])
    method._semantic_ids(dataset)
    assert seen[-1][0] == f"{dataset.catalogue.title_or(0)}; brand: B0; categories: Beauty > Skin"
    assert seen[-1][1] == dataset.catalogue.title_or(1)
    assert method.id_facts["text_field_coverage"] == {"title": 1.0, "brand": 0.5, "categories": 0.5}
    assert "item text: title, brand, categories" in " ".join(method.describe()["deviations"])
    with pytest.raises(BenchError, match=r"\[tiger\]\.text_fields"):
        parse_settings({"text_fields": "brand"})


@pytest.mark.parametrize(("preset", "low", "high"), [(None, 4.5e6, 4.65e6), ("paper", 4.75e6, 4.9e6),
                                                     ("small_t5", 0.25e6, 0.32e6)])
def test_the_default_tiger_is_the_papers_t5(preset: str | None, low: float, high: float):
    """The `tiger` row is the paper's T5 (4+4 layers, d_model 128, 6 x 64 heads, d_ff 1024: ~4.8M
    parameters with its 2,000 user tokens); the CPU-sized T5 is a named preset and reports itself so."""
    from bench.config import load_config, method_config
    from methods.tiger.method import TigerMethod

    settings = parse_settings(method_config(load_config(), "tiger", preset)["tiger"])
    layout = TokenLayout((settings.codebook_size,) * settings.levels + (20,), settings.user_tokens)
    model = build_t5(layout, settings.d_model, settings.num_layers, settings.num_heads, settings.d_kv,
                     settings.d_ff, settings.dropout)
    assert low < sum(p.numel() for p in model.parameters()) < high
    method = TigerMethod(settings.as_dict(), RunContext())
    assert method.describe()["setting"] == ({None: None, "paper": "paper", "small_t5": "small_t5"}[preset])


def test_bf16_decoding_ranks_the_same_top_items_as_fp32(tmp_path: Path):
    """bf16 autocast (precision "auto" on a CPU with native bf16, or CUDA) changes the T5's arithmetic, not
    the ranking: on a trained tiny model the beams hold the same items, and the scores of the top items
    agree to bf16's precision. (Emulated here where the CPU has no bf16: slower, same numbers.)"""
    dataset = rule_dataset(num_items=20, num_users=200, length=6, rule="next", seed=0)
    method = make(tmp_path, epochs=25, patience=0)
    method.fit(dataset)
    users, histories = [0, 1, 2, 3], [[1, 2], [5], [7, 8, 9], [3]]
    method.precision = "fp32"
    fp32 = method.score(users, histories)
    method.precision = "bf16"
    bf16 = method.score(users, histories)
    assert torch.equal(torch.isfinite(fp32), torch.isfinite(bf16))  # the same beam items
    assert torch.equal(fp32.argmax(dim=1), bf16.argmax(dim=1))  # the same top item
    finite = torch.isfinite(fp32)
    difference = (fp32[finite] - bf16[finite]).abs().max()
    assert 0 < difference < 0.1  # bf16 really ran (scores moved), within its resolution


class Interrupt(Exception):
    pass


def test_a_tiger_run_stopped_between_epochs_resumes_to_the_same_weights(tmp_path: Path):
    """Stopped after epoch 1's checkpoint was committed (here: inside the second validation), run again:
    it resumes after epoch 1 and ends at the uninterrupted run's weights; with validate_every = 2 only
    epochs 2, 4 and the last are validated."""
    dataset = rule_dataset(num_items=20, num_users=80, length=5, rule="next", seed=1)

    def fitted(work: Path, validate: Any, **settings: Any) -> Any:
        method = make(work, **{"epochs": 3, "patience": 0, **settings})
        method.context.validate = validate
        method.fit(dataset)
        return method

    straight = fitted(tmp_path / "straight", lambda m: 0.5)
    calls: list[int] = []

    def stop_at_second(method: Any) -> float:
        calls.append(1)
        if len(calls) == 2:
            raise Interrupt
        return 0.5

    with pytest.raises(Interrupt):
        fitted(tmp_path / "resumed", stop_at_second)
    resumed = fitted(tmp_path / "resumed", lambda m: 0.5)
    assert resumed.describe()["resumed_after_epoch"] == 1 and resumed.describe()["training_calls"] == 2
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    sparse = fitted(tmp_path / "sparse", lambda m: 0.5, validate_every=2, epochs=5)
    assert sparse.describe()["validated_epochs"] == [2, 4, 5]
