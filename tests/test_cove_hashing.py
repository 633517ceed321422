"""CoVE's hashed item tables: deterministic, even, 1/ratio memory, and the stated formulas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.cove.hashing import LARGE_PRIMES, UniversalHashes, num_buckets
from methods.cove.item_layers import ItemEmbedding, ItemHead, item_table_bytes


def test_primes_are_prime():
    for p in LARGE_PRIMES:
        assert all(p % d for d in range(2, int(p**0.5) + 1)), p


def test_hashes_are_deterministic_under_a_seed_and_change_with_it():
    items = torch.arange(5000)
    first = UniversalHashes.draw(4, 625, seed=3)(items)
    assert torch.equal(first, UniversalHashes.draw(4, 625, seed=3)(items))
    assert not torch.equal(first, UniversalHashes.draw(4, 625, seed=4)(items))
    assert first.shape == (5000, 4) and first.min() >= 0 and first.max() < 625


@pytest.mark.parametrize("ratio", [2, 4, 8, 16, 32, 64])
def test_hashes_spread_items_evenly(ratio: int):
    n = 12_101  # Beauty's catalogue size
    buckets = num_buckets(n, ratio)
    codes = UniversalHashes.draw(4, buckets, seed=0)(torch.arange(n))
    # Each item writes k rows; the load a row carries should stay within a few Poisson
    # standard deviations of the mean k·N/|S| (a skewed hash piles up far more). Single hashes of
    # this family can be lumpy for sequential ids (one of the four at ratio 2 uses ~58% of rows),
    # which is why the mean of k rows, not one row, stands for an item.
    load = torch.bincount(codes.flatten(), minlength=buckets)
    mean = 4 * n / buckets
    assert load.max() <= mean + 4 * mean**0.5 + 2, (load.max().item(), mean)
    assert (load > 0).all()
    # Two items almost never share all k buckets, so hashed vectors stay item-specific.
    assert len({tuple(row) for row in codes.tolist()}) >= 0.99 * n


def test_hash_codes_match_the_authors_formula_by_hand():
    """The authors (emb_comp_utils.get_peft_embedding) call random.seed(seed), then draw every
    a_j = randint(p_j // 2, p_j), then every b_j = randint(0, p_j). For seed 0 and k = 4 that gives the
    a, b below; the codes are ((a·i + b) mod p) mod |S| worked out by hand, e.g. item 0, hash 0:
    68622131 mod 88579013 = 68622131 and 68622131 - 45748·1500 = 131."""
    hashes = UniversalHashes.draw(4, 1500, seed=0)
    assert hashes.p == (88579013, 24463903, 10637969, 11843057)
    assert hashes.a == (70142880, 19287971, 5658591, 8093479)
    assert hashes.b == (68622131, 16305027, 6793667, 5088743)
    codes = hashes(torch.tensor([0, 1, 12099]))
    assert codes.tolist() == [[131, 27, 167, 743], [498, 595, 789, 1165], [1198, 439, 192, 1388]]


def test_bucket_count_equals_the_authors_only_when_the_ratio_divides_n():
    assert num_buckets(12000, 8) == 1500 == 12000 // 8
    assert num_buckets(12101, 8) == 1513 and 12101 // 8 == 1512  # Beauty: one row more than theirs
    assert num_buckets(5, 8) == 1


def test_ratio_one_is_a_plain_embedding_and_head():
    torch.manual_seed(0)
    table = ItemEmbedding(50, 16, ratio=1, num_hashes=4)
    plain = nn.Embedding(50, 16)
    plain.weight.data.copy_(table.weight.data)
    items = torch.randint(0, 50, (3, 7))
    assert torch.equal(table(items), plain(items))
    head = ItemHead(50, 16, ratio=1)
    hidden = torch.randn(5, 16)
    assert torch.allclose(head(hidden), hidden @ head.weight.T)
    assert table.weight.shape == (50, 16) and table.num_hashes == 1


def test_hashed_formulas_match_their_definition():
    torch.manual_seed(0)
    n, d, k = 40, 8, 3
    emb, head = ItemEmbedding(n, d, ratio=4, num_hashes=k, seed=1), ItemHead(n, d, ratio=4, num_hashes=k, seed=1)
    codes = UniversalHashes.draw(k, 10, seed=1)(torch.arange(n))
    assert torch.equal(emb.codes, codes) and torch.equal(head.codes, codes)
    items = torch.tensor([[0, 5], [39, 12]])
    expected = torch.stack([torch.stack([emb.weight[codes[i]].mean(0) for i in row]) for row in items.tolist()])
    assert torch.allclose(emb(items), expected, atol=1e-6)
    hidden = torch.randn(2, d)
    # score(i) = mean over j of the hashed logit hidden · W[h_j(i)]
    per_hash = hidden @ head.weight.T  # (2, |S|)
    expected_scores = per_hash[:, codes].mean(-1)
    assert torch.allclose(head(hidden), expected_scores, atol=1e-5)


def test_item_table_memory_falls_as_one_over_ratio():
    n, d = 12_101, 64
    full = item_table_bytes(ItemEmbedding(n, d), ItemHead(n, d))
    assert full == 2 * n * d * 4
    for ratio in (2, 4, 8, 16, 32, 64):
        tables = (ItemEmbedding(n, d, ratio), ItemHead(n, d, ratio))
        assert tables[0].weight.shape[0] == -(-n // ratio)
        assert item_table_bytes(*tables) == pytest.approx(full / ratio, rel=0.01)


def test_gradients_flow_into_hashed_rows():
    head = ItemHead(30, 8, ratio=3, num_hashes=2)
    head(torch.randn(4, 8)).sum().backward()
    used = torch.unique(head.codes)
    assert head.weight.grad[used].abs().sum(-1).gt(0).all()


@pytest.mark.parametrize("ratio", [1, 4])
def test_item_head_in_chunks_equals_the_item_matrix_formula(ratio: int, monkeypatch: pytest.MonkeyPatch):
    """The hashed head never builds the N x d item matrix (it gathers k columns of h @ W.T per item
    chunk), yet gives h . v(i) for every item; any slice of the catalogue gives the same columns."""
    import methods.cove.item_layers as layers

    monkeypatch.setattr(layers, "ITEM_CHUNK", 7)  # many chunks, a ragged last one
    torch.manual_seed(0)
    head = layers.ItemHead(50, 16, ratio=ratio, num_hashes=3)
    hidden = torch.randn(4, 16)
    reference = hidden @ head.vectors(torch.arange(50)).T
    assert torch.allclose(head(hidden), reference, atol=1e-5)
    assert torch.allclose(head.logits(hidden, 10, 33), reference[:, 10:33], atol=1e-5)
    assert head.codes.dtype == torch.int32
    loss = head(hidden).logsumexp(-1).sum()
    loss.backward()  # trainable through the gather
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("ratio", [1, 4])
@pytest.mark.parametrize("chunk", [7, 16, 49])
def test_chunked_cross_entropy_equals_the_full_one_with_its_gradients(ratio: int, chunk: int):
    """Past `chunk` items the loss is a log-sum-exp over item chunks recomputed in backward: the same
    value and the same gradients (states and item rows) as F.cross_entropy over all N logits."""
    import torch.nn.functional as F

    from methods.cove.item_layers import ItemHead

    torch.manual_seed(0)
    head = ItemHead(50, 16, ratio=ratio, num_hashes=3)
    hidden = torch.randn(6, 16, requires_grad=True)
    targets = torch.tensor([0, 7, 13, 49, 21, 7])
    full = F.cross_entropy(hidden @ head.vectors(torch.arange(50)).T, targets)
    full_grads = torch.autograd.grad(full, (hidden, head.weight))
    chunked = head.cross_entropy(hidden, targets, chunk=chunk)
    chunked_grads = torch.autograd.grad(chunked, (hidden, head.weight))
    assert torch.allclose(chunked, full, atol=1e-5)
    for mine, reference in zip(chunked_grads, full_grads):
        assert torch.allclose(mine, reference, atol=1e-6)
    # The check can fail: a chunked loss that dropped the last, ragged chunk would differ.
    partial = torch.stack([head.logits(hidden, s, min(s + chunk, 49)).logsumexp(-1) for s in range(0, 49, chunk)])
    wrong = (partial.logsumexp(0) - (hidden * head.vectors(targets)).sum(-1)).mean()
    assert not torch.allclose(wrong, full, atol=1e-5)


@pytest.mark.parametrize("ratio", [1, 4])
@pytest.mark.parametrize("chunk", [7, 64])
def test_ignored_and_out_of_range_targets_follow_one_rule_in_both_paths(ratio: int, chunk: int):
    """-100 targets leave the mean (as F.cross_entropy's ignore_index) whether or not the catalogue is
    chunked; a target outside the catalogue is an IndexError in both paths, never a wrapped index."""
    import torch.nn.functional as F

    from methods.cove.item_layers import ItemHead

    torch.manual_seed(0)
    head = ItemHead(50, 16, ratio=ratio, num_hashes=3)
    hidden = torch.randn(5, 16)
    targets = torch.tensor([3, -100, 49, -100, 0])
    kept = targets != -100
    expected = F.cross_entropy(hidden[kept] @ head.vectors(torch.arange(50)).T, targets[kept])
    assert torch.allclose(head.cross_entropy(hidden, targets, chunk=chunk), expected, atol=1e-5)
    assert torch.isnan(head.cross_entropy(hidden[:1], torch.tensor([-100]), chunk=chunk))
    for wrong in (-1, -7, 50):
        with pytest.raises(IndexError):
            head.cross_entropy(hidden[:2], torch.tensor([3, wrong]), chunk=chunk)


def test_target_logits_are_bit_for_bit_the_slice_logits():
    """The evaluator takes each target's score from target_logits_from and counts the slices' items scoring
    at least as high: any rounding difference between the two paths would move ties, so they must agree
    exactly, whatever slice the target sits in (and ratio 1, a matmul, declines)."""
    from methods.cove.item_layers import ItemHead

    torch.manual_seed(0)
    head = ItemHead(5000, 24, ratio=8, num_hashes=4)
    hidden = torch.randn(32, 24)
    projected = head.project(hidden)
    targets = torch.randint(0, 5000, (32,))
    direct = head.target_logits_from(projected, targets)
    for start, end in ((0, 5000), (0, 4096), (1000, 5000), (17, 2600)):
        inside = (targets >= start) & (targets < end)
        rows = torch.nonzero(inside).flatten()
        sliced = head.logits_from(projected, start, end)[rows, targets[rows] - start]
        assert torch.equal(sliced, direct[rows])
    assert ItemHead(50, 8, ratio=1).target_logits_from(torch.randn(3, 8), torch.tensor([1, 2, 3])) is None


def test_project_once_then_slices_equal_the_direct_logits():
    """CoVE's encode projects the states once per batch and score_items reads slices of that projection."""
    from methods.cove.item_layers import ItemHead

    torch.manual_seed(1)
    head = ItemHead(300, 16, ratio=4, num_hashes=3)
    hidden = torch.randn(6, 16)
    projected = head.project(hidden)
    assert projected.shape == (75, 6)
    whole = head.logits(hidden, 0, 300)
    assert torch.equal(torch.cat([head.logits_from(projected, s, min(s + 64, 300)) for s in range(0, 300, 64)], 1),
                       whole)
    assert torch.allclose(whole, hidden @ head.vectors(torch.arange(300)).T, atol=1e-5)


def _gathers_counted(head, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = head.item_major_logits
    monkeypatch.setattr(head, "item_major_logits", lambda *a: calls.append(1) or real(*a))
    return calls


def test_hashed_training_loss_gathers_each_slice_once_and_keeps_its_gradient(monkeypatch: pytest.MonkeyPatch):
    """With a gradient, the hashed chunked loss scatters the softmax weights in forward (one gather per
    item slice in all); without one it only sums; a second backward (retain_graph) recomputes. All three
    give F.cross_entropy's value and gradients."""
    import torch.nn.functional as F

    from methods.cove.item_layers import ItemHead

    torch.manual_seed(0)
    head = ItemHead(50, 16, ratio=4, num_hashes=3)
    hidden = torch.randn(6, 16, requires_grad=True)
    targets = torch.tensor([0, 7, 13, 49, 21, 7])
    full = F.cross_entropy(hidden @ head.vectors(torch.arange(50)).T, targets)
    full_grads = torch.autograd.grad(full, (hidden, head.weight))
    calls = _gathers_counted(head, monkeypatch)
    chunked = head.cross_entropy(hidden, targets, chunk=16)
    first = torch.autograd.grad(chunked, (hidden, head.weight), retain_graph=True)
    assert len(calls) == 4  # 50 items in slices of 16: each gathered once for value and gradient
    second = torch.autograd.grad(chunked, (hidden, head.weight))
    assert len(calls) == 8  # the retained graph's second backward recomputes the four slices
    for grads in (first, second):
        for mine, reference in zip(grads, full_grads):
            assert torch.allclose(mine, reference, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(head.cross_entropy(hidden, targets, chunk=16), full, atol=1e-5)


@pytest.mark.parametrize("underflow_guard", [True, False])
def test_one_pass_falls_back_when_a_column_would_underflow(underflow_guard: bool, monkeypatch: pytest.MonkeyPatch):
    """Logits spread by hundreds put every exp(logit - bound) of a column below fp32's range: the loss
    falls back to the two-pass form and stays exact. Twin: with the guard off the one pass underflows
    and the loss is wrong."""
    import torch.nn.functional as F

    import methods.cove.item_layers as layers

    if not underflow_guard:
        monkeypatch.setattr(layers, "SINGLE_PASS_UNDERFLOW", 1e9)  # exp(-1e9) == 0: never falls back
    torch.manual_seed(0)
    head = layers.ItemHead(50, 16, ratio=4, num_hashes=3)
    with torch.no_grad():
        head.weight.mul_(40.0)
    hidden = (torch.randn(6, 16) * 40.0).requires_grad_()
    targets = torch.tensor([0, 7, 13, 49, 21, 7])
    full = F.cross_entropy(hidden @ head.vectors(torch.arange(50)).T, targets)
    chunked = head.cross_entropy(hidden, targets, chunk=16)
    exact = bool(torch.isclose(chunked, full, rtol=1e-5)) and torch.allclose(
        torch.autograd.grad(chunked, hidden)[0], torch.autograd.grad(full, hidden)[0], rtol=1e-4, atol=1e-4)
    assert exact == underflow_guard
