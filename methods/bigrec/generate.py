"""BIGRec inference: beam search from the prompt, keep the top beam, count generated tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Generation:
    texts: list[str]
    tokens: list[int]  # generated tokens per prompt, the closing EOS included


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    num_beams: int = 4,
    max_new_tokens: int = 64,
    exact_new_tokens: int | None = None,
    device: str = "cpu",
    precision: str = "fp32",
) -> Generation:
    """Left-padded batch, deterministic beam search (no sampling), stop at EOS; the prompt is encoded once
    per request and shared by its beams (bench.train.beam_search: the same beams as plain `generate`).

    As the authors' `inference.py`: `num_beams` beams, one returned sequence (they return 4 but
    ground only the first), length penalty and early stopping at transformers' defaults.
    `exact_new_tokens` decodes exactly that many tokens (EOS suppressed until then): for speed
    tables, where an untrained model's length would otherwise be set by the cap.
    """
    import torch

    from bench.train.beam_search import beam_generate
    from bench.train.precision import autocast

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
    width = max(len(e) for e in encoded)
    ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in encoded], device=device)
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded], device=device)
    with torch.no_grad(), autocast(device, precision):
        output = beam_generate(
            model,
            ids,
            mask,
            num_beams=num_beams,
            num_return_sequences=1,
            do_sample=False,
            max_new_tokens=exact_new_tokens or max_new_tokens,
            min_new_tokens=exact_new_tokens or 0,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=pad_id,
        )
    new = output[:, width:].tolist()
    texts, counts = [], []
    for row in new:
        end = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        counts.append(end)
        texts.append(tokenizer.decode(row[:end], skip_special_tokens=True))
    return Generation(texts, counts)
