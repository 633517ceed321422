"""Text -> vector maps used to ground generated titles to items (BIGRec's second step).

`base_llm`: the authors' choice: the base LLM (LoRA switched off) embeds a text as the
last layer's hidden state at its last token; items are compared by L2 distance.
`minilm`: all-MiniLM-L6-v2 sentence embeddings, normalised, compared by cosine
(bench.train.text_embeddings.MiniLMEmbedder, shared with TIGER).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from typing import Any

import numpy as np


def weights_fingerprint(model: Any) -> str:
    """Short hash of a model's config and a slice of its weights.

    Two random test models with the same config must not share cached title embeddings,
    and a full-weight hash of a 135M model would cost seconds; a slice of the first and last
    parameter tensors is enough to tell checkpoints apart.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    params = [p for name, p in model.named_parameters() if "lora_" not in name]
    for param in (params[0], params[-1]) if params else ():
        flat = param.detach().reshape(-1)[:65536].float().cpu().numpy()
        digest.update(flat.tobytes())
    return digest.hexdigest()[:16]


class BaseLLMEmbedder:
    """Last-layer hidden state at the last real token of the base model (adapter disabled).

    The authors ran a left-padded forward without position ids, so a title's vector depended
    on how much padding its batch had; we pass position ids from the attention mask, which
    makes a text's embedding independent of its batch (a labelled fix, not a change of idea).
    """

    metric = "l2"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_id: str,
        device: str = "cpu",
        batch_size: int = 16,
        adapter_off: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.batch_size = batch_size
        self.adapter_off = adapter_off or contextlib.nullcontext
        self.id = f"base_llm:{model_id}"

    def embed(self, texts: list[str]) -> np.ndarray:
        import torch

        from bench.train.progress import progress_bar

        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        # An empty generation still needs one token to read a state from.
        encoded = [self.tokenizer(text, add_special_tokens=True)["input_ids"] or [self.tokenizer.eos_token_id]
                   for text in texts]
        # Batches of similar length waste little on padding; embeddings do not depend on the batch.
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        out = np.zeros((len(texts), 0), dtype=np.float32)
        causal_lm = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        decoder = causal_lm.get_decoder()
        was_training = self.model.training
        self.model.eval()
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        try:
            with torch.no_grad(), self.adapter_off():
                for rows in progress_bar(batches, desc="embed titles", unit="batch", enabled=len(texts) >= 1000):
                    chunk = [encoded[i] for i in rows]
                    width = max(len(e) for e in chunk)
                    ids = torch.tensor([[pad_id] * (width - len(e)) + e for e in chunk], device=self.device)
                    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in chunk], device=self.device)
                    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
                    # The decoder's output is hidden_states[-1] of the causal LM (after the
                    # final norm), without the vocabulary projection we do not need.
                    hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
                    vectors = hidden[:, -1, :].float().cpu().numpy()
                    if out.shape[1] == 0:
                        out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
                    out[rows] = vectors
        finally:
            self.model.train(was_training)
        return out
