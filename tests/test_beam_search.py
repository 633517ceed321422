"""The shared-prompt beam search finds the beams plain Hugging Face beam search finds (the speed-up must not
change results): free generation with EOS and length penalty, and decoding constrained to a catalogue trie."""

from __future__ import annotations

import pytest
import torch
from transformers.modeling_utils import AttentionInterface

from bench.train.backbone import tiny_llama
from bench.train.beam_search import ATTENTION_NAME, beam_generate

VOCAB = 60
EOS, PAD = 1, 0


def sharp_model(seed: int = 1) -> torch.nn.Module:
    """A random tiny Llama with scaled weights, so its next-token distributions are peaked like a trained
    model's and beams diverge (at init every continuation is nearly equally likely)."""
    model = tiny_llama(VOCAB, seed=seed, hidden=32, layers=2)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(8)
    return model


def left_padded(lengths: list[int], seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), PAD, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = torch.randint(2, VOCAB, (length,), generator=generator)
        mask[row, width - length:] = 1
    return ids, mask


@pytest.fixture
def counted_attention(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the shared-prompt attention, so a test knows the shared path ran (not a fallback)."""
    calls: list[int] = []
    original = AttentionInterface._global_mapping[ATTENTION_NAME]

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, ATTENTION_NAME, counting)
    return calls


@pytest.mark.parametrize("beams", [2, 6])
def test_free_generation_matches_plain_beam_search(beams: int, counted_attention: list[int]):
    model = sharp_model()
    ids, mask = left_padded([7, 3, 9, 5, 1])
    settings = dict(num_beams=beams, max_new_tokens=8, num_return_sequences=beams, do_sample=False,
                    eos_token_id=EOS, pad_token_id=PAD, return_dict_in_generate=True, output_scores=True,
                    length_penalty=1.0)
    plain = model.generate(input_ids=ids, attention_mask=mask, **settings)
    shared = beam_generate(model, ids, mask, **settings)
    assert counted_attention, "the shared-prompt attention never ran"
    assert torch.equal(plain.sequences, shared.sequences)
    assert torch.allclose(plain.sequences_scores, shared.sequences_scores, atol=1e-4)
    assert (plain.sequences[:, ids.shape[1]:] == EOS).any(), "no beam ended early: EOS handling untested"


def test_trie_constrained_decoding_matches_and_stays_in_the_catalogue(counted_attention: list[int]):
    """LC-Rec/TIGER-style: items are 3-token codes; every returned beam is a catalogue item."""
    generator = torch.Generator().manual_seed(5)
    catalogue = {tuple(int(t) for t in torch.randint(2, VOCAB, (3,), generator=generator)) for _ in range(40)}
    width = 6
    ids, mask = left_padded([6, 2, 4, 5], seed=9)

    def allowed(row: int, sequence: torch.Tensor) -> list[int]:
        prefix = tuple(int(t) for t in sequence[width:])
        return sorted({code[len(prefix)] for code in catalogue if code[:len(prefix)] == prefix}) or [PAD]

    settings = dict(num_beams=10, max_new_tokens=3, min_new_tokens=3, num_return_sequences=10, do_sample=False,
                    eos_token_id=EOS, pad_token_id=PAD, prefix_allowed_tokens_fn=allowed)
    plain = sharp_model(seed=2).generate(input_ids=ids, attention_mask=mask, **settings)
    shared = beam_generate(sharp_model(seed=2), ids, mask, **settings)
    assert counted_attention
    assert torch.equal(plain, shared)
    assert all(tuple(row) in catalogue for row in shared[:, width:].tolist())
    # Different requests get different rankings: the prompts are read, not only the trie.
    first = [tuple(row) for row in shared[:10, width:].tolist()]
    second = [tuple(row) for row in shared[10:20, width:].tolist()]
    assert first != second


def test_one_token_prompts_have_nothing_to_share_and_still_match(counted_attention: list[int]):
    model = sharp_model(seed=4)
    ids, mask = left_padded([1, 1, 1], seed=11)
    settings = dict(num_beams=3, max_new_tokens=5, do_sample=False, eos_token_id=EOS, pad_token_id=PAD)
    assert torch.equal(model.generate(input_ids=ids, attention_mask=mask, **settings),
                       beam_generate(model, ids, mask, **settings))
    assert counted_attention


def test_vectorised_trie_constraint_equals_the_per_beam_callback(counted_attention: list[int]):
    """methods.semantic_ids.trie's TrieConstraint (gathers over a node table) allows exactly what a per-beam
    prefix callback allows: the same beams as plain Hugging Face beam search with that callback, and
    `items` names each beam's catalogue item."""
    import numpy as np
    from transformers import LogitsProcessorList

    from methods.semantic_ids.trie import CatalogueTrie, TrieConstraint

    generator = torch.Generator().manual_seed(7)
    catalogue = sorted({tuple(int(t) for t in torch.randint(2, VOCAB, (3,), generator=generator))
                        for _ in range(40)})
    trie = CatalogueTrie(np.array(catalogue))
    ids, mask = left_padded([6, 2, 4, 5], seed=9)
    width = ids.shape[1]

    def allowed(row: int, sequence: torch.Tensor) -> list[int]:
        prefix = tuple(int(t) for t in sequence[width:])
        return sorted({code[len(prefix)] for code in catalogue if code[:len(prefix)] == prefix}) or [PAD]

    settings = dict(num_beams=10, max_new_tokens=3, min_new_tokens=3, num_return_sequences=10, do_sample=False,
                    eos_token_id=EOS, pad_token_id=PAD)
    plain = sharp_model(seed=2).generate(input_ids=ids, attention_mask=mask, prefix_allowed_tokens_fn=allowed,
                                         **settings)
    vectorised = beam_generate(sharp_model(seed=2), ids, mask, **settings,
                               logits_processor=LogitsProcessorList([TrieConstraint(trie, width, PAD)]))
    assert counted_attention
    assert torch.equal(plain, vectorised)
    items = trie.items(vectorised[:, width:]).tolist()
    assert all(catalogue[item] == tuple(row) for item, row in zip(items, vectorised[:, width:].tolist()))
    # The twin that can fail: a constraint one level off lets other tokens through, and the beams change.
    shifted = beam_generate(sharp_model(seed=2), ids, mask, **settings,
                            logits_processor=LogitsProcessorList([TrieConstraint(trie, width - 1, PAD)]))
    assert not torch.equal(plain, shifted)
