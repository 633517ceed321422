"""BIGRec's grounding step: prompts, distances over every item, the title cache, the adjustment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tiny import synthetic_titles

from bench.train.text_embeddings import cache_file, title_embeddings
from methods.bigrec.adjust import GAMMA_GRID, adjusted_distance, minmax_rows, popularity
from methods.bigrec.grounding import ItemIndex, numpy_distances
from methods.bigrec.prompts import IGNORE_INDEX, build_prompt, build_response, encode_example, shorten_title, unquote
from methods.bigrec.samples import choose_users, training_samples


class CountingEmbedder:
    """Bag-of-words hashing embedder that counts how many texts it was asked to embed."""

    metric = "l2"

    def __init__(self, name: str = "counting") -> None:
        self.id = name
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.split():
                out[row, sum(map(ord, word)) % 64] += 1.0
                out[row, (7 * len(word) + ord(word[0])) % 64] += 0.5
        return out


def test_prompt_layout_and_response_only_labels():
    class CharTokenizer:
        eos_token_id = 0

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": [ord(c) for c in text]}

    prompt = build_prompt(["red lipstick 0", "blue serum 1"])
    assert prompt.endswith('### Input:\nThe user has bought the following items before:"red lipstick 0", '
                           '"blue serum 1"\n \n\n### Response:\n')
    example = encode_example(CharTokenizer(), prompt, build_response("green mask 2"))
    n_prompt = len(prompt)
    assert example.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert example.labels[n_prompt:] == [ord(c) for c in '"green mask 2"'] + [0]
    everything = encode_example(CharTokenizer(), prompt, build_response("green mask 2"), loss="all_tokens")
    assert everything.labels == everything.input_ids
    cut = encode_example(CharTokenizer(), prompt, build_response("green mask 2"), max_length=40)
    assert len(cut.input_ids) == 40 and cut.input_ids[-1] == 0
    # The authors embed the whole response, only the quotes at its two ends removed.
    assert unquote('"green mask 2"') == "green mask 2"
    assert unquote('"green mask 2"\nmore') == 'green mask 2"\nmore'
    assert unquote(' "green"') == ' "green'  # strip('"') leaves spaces, as theirs
    assert shorten_title("a  b c d", 2) == "a b" and shorten_title("a  b", 0) == "a b"


def test_training_samples_last_and_prefixes():
    train = [[1, 2, 3, 4], [5], [6, 7]]
    last = training_samples(train, [0, 1, 2], "last", max_history=2)
    assert [(s.user, s.history, s.target) for s in last] == [(0, [2, 3], 4), (2, [6], 7)]
    prefixes = training_samples(train, [0], "all_prefixes", max_history=10)
    assert [(s.history, s.target) for s in prefixes] == [([1], 2), ([1, 2], 3), ([1, 2, 3], 4)]
    assert choose_users(10, 3, seed=1) == choose_users(10, 3, seed=1) != choose_users(10, 3, seed=2)
    assert choose_users(5, 0, seed=0) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_faiss_and_brute_force_agree(metric: str):
    rng = np.random.default_rng(0)
    items = rng.normal(size=(300, 24)).astype(np.float32)
    queries = rng.normal(size=(7, 24)).astype(np.float32)
    faiss_d = ItemIndex(items, metric, backend="faiss").distances(queries)
    numpy_d = ItemIndex(items, metric, backend="numpy").distances(queries)
    torch_d = ItemIndex(items, metric, backend="torch").distances(queries)
    assert faiss_d.shape == (7, 300)
    np.testing.assert_array_equal(np.argsort(faiss_d, axis=1), np.argsort(numpy_d, axis=1))
    np.testing.assert_allclose(faiss_d, numpy_d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(torch_d, numpy_d, rtol=1e-4, atol=1e-4)


def test_grounding_scores_every_item_and_puts_exact_title_first():
    titles = synthetic_titles(40)
    embedder = CountingEmbedder()
    index = ItemIndex(embedder.embed(titles), "l2")
    for target in (0, 13, 39):
        distances = index.distances(embedder.embed([titles[target]]))
        assert distances.shape == (1, 40) and np.isfinite(distances).all()
        scores = -distances[0]
        assert np.argmax(scores) == target and (scores < scores[target]).sum() == 39
    assert numpy_distances(np.zeros((1, 3)), np.eye(3), "l2").shape == (1, 3)


def test_minilm_grounding_ranks_exact_title_first():
    from bench.train.text_embeddings import MiniLMEmbedder

    titles = ["Maybelline Great Lash Mascara", "Neutrogena Hydro Boost Gel Cream", "OPI Nail Lacquer Red",
              "Revlon One-Step Hair Dryer", "CeraVe Foaming Facial Cleanser"]
    embedder = MiniLMEmbedder()
    index = ItemIndex(embedder.embed(titles), embedder.metric)
    distances = index.distances(embedder.embed(["OPI Nail Lacquer Red", "Hydro Boost gel cream by Neutrogena"]))
    assert distances.shape == (2, 5)
    assert list(np.argmin(distances, axis=1)) == [2, 1]


def test_title_cache_reused_and_invalidated(tmp_path: Path):
    titles = synthetic_titles(12)
    embedder = CountingEmbedder("counting:v1")
    first, reused = title_embeddings(embedder, titles, tmp_path)
    assert not reused and embedder.calls == 1
    second, reused = title_embeddings(embedder, titles, tmp_path)
    assert reused and embedder.calls == 1
    np.testing.assert_array_equal(first, second)
    assert cache_file(tmp_path, embedder.id, titles).exists()
    changed = titles[:5] + ["a brand new title"] + titles[6:]
    third, reused = title_embeddings(embedder, changed, tmp_path)
    assert not reused and embedder.calls == 2 and not np.array_equal(third, first)
    other_space = CountingEmbedder("counting:v2")
    _, reused = title_embeddings(other_space, titles, tmp_path)
    assert not reused and other_space.calls == 1


def test_adjustment_formula_hand_computed():
    distance = np.array([[2.0, 4.0, 6.0]])
    side = np.array([10.0, 0.0, 5.0])
    # D~ = [0, .5, 1]; C~ = [1, 0, .5]; gamma = 1: [0/2, .5/1, 1/1.5]
    np.testing.assert_allclose(adjusted_distance(distance, side, 1.0), [[0.0, 0.5, 1 / 1.5]])
    # gamma = 2, popularity overturns distance: D~ = [.5, 1, 0], C~ = [0, 1, .5]; item 2 stays first
    # but items 0 and 1 swap: .5/(1+0)^2 = .5 vs 1/(1+1)^2 = .25.
    swapped = adjusted_distance(np.array([[3.0, 4.0, 2.0]]), np.array([0.0, 8.0, 4.0]), 2.0)
    np.testing.assert_allclose(swapped, [[0.5, 0.25, 0.0]])
    np.testing.assert_allclose(adjusted_distance(distance, side, 0.0), minmax_rows(distance))
    assert minmax_rows(np.array([[3.0, 3.0]])).tolist() == [[0.0, 0.0]]
    assert popularity([[0, 1, 1], [1, 2]], 4).tolist() == [1.0, 3.0, 1.0, 0.0]
    assert GAMMA_GRID[0] == 0.0 and 0.01 in GAMMA_GRID and 99.0 in GAMMA_GRID
    assert len(set(GAMMA_GRID)) == len(GAMMA_GRID)


def test_base_llm_embedding_is_batch_independent_and_grounds_exact_titles():
    torch = pytest.importorskip("torch")
    from tiny import tiny_backbone

    from methods.bigrec.embedders import BaseLLMEmbedder

    titles = synthetic_titles(30) + ["red", "a much longer title with many words in it 7"]
    model, tokenizer = tiny_backbone(titles, seed=1)
    embedder = BaseLLMEmbedder(model, tokenizer, "tiny", batch_size=8)
    together = embedder.embed(titles)
    alone = np.concatenate([embedder.embed([t]) for t in titles[::7]])
    np.testing.assert_allclose(together[::7], alone, rtol=1e-4, atol=1e-5)
    assert not model.training and torch.isfinite(torch.from_numpy(together)).all()
    index = ItemIndex(together, embedder.metric)
    assert (np.argmin(index.distances(embedder.embed([titles[4], titles[31]])), axis=1) == [4, 31]).all()


def test_title_cache_resumes_after_an_interrupted_run(tmp_path: Path):
    titles = synthetic_titles(25)

    class FailingOnce(CountingEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            if self.calls == 2 and not getattr(self, "failed", False):
                self.failed = True
                raise KeyboardInterrupt
            return super().embed(texts)

    embedder = FailingOnce("failing")
    with pytest.raises(KeyboardInterrupt):
        title_embeddings(embedder, titles, tmp_path, chunk=10)
    assert embedder.calls == 2  # chunks 0 and 1 saved, chunk 2 interrupted
    vectors, reused = title_embeddings(embedder, titles, tmp_path, chunk=10)
    assert not reused and embedder.calls == 3  # only the missing chunk
    np.testing.assert_array_equal(vectors, CountingEmbedder().embed(titles))
    assert [p.name for p in tmp_path.rglob("*.npy")] == [cache_file(tmp_path, "failing", titles).name]
