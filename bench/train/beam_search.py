"""Hugging Face beam search with the prompt encoded once per request and its keys/values shared by the beams.

`model.generate(num_beams=n)` copies every prompt into n beams before the first forward pass, so the prompt
is encoded n times, and every step concatenates and beam-reorders a cache of n copies of it: at batch 32,
4 beams and ~300 prompt tokens that is ~2 GB of memory traffic per generated token on SmolLM2, which made
BIGRec's batch 32 slower per request than batch 1. Here the prompt (all but its last token) is encoded once
per request; its keys/values stay at one copy per request, only the generated tokens' keys/values are per
beam (preallocated, reordered in place), and one attention function reads the shared prompt part once per
step for all beams of a request. Everything else is Hugging Face's own `generate`: the same beam algorithm,
length penalty, EOS handling and logits processors (`prefix_allowed_tokens_fn` for catalogue tries), so the
beams are the ones plain beam search finds (tests/test_beam_search.py checks it on tiny models).

Works for decoder-only models whose attention goes through `ALL_ATTENTION_FUNCTIONS` and `cache.update`
(Llama, Qwen2/3, Mistral without a sliding window, SmolLM2); others use plain `generate` (`shares_prompt`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.modeling_utils import AttentionInterface

from bench.train.precision import attention_kernel

ATTENTION_NAME = "recbench_shared_prompt"


@dataclass
class SharedStates:
    """One layer's keys (or values) as attention sees them: the prompt once per request, then each beam's own."""

    prompt: torch.Tensor  # [requests, kv_heads, prompt_len, head_dim]
    prompt_mask: torch.Tensor  # [requests, prompt_len] bool, False at left padding
    beams: torch.Tensor  # [requests * beams, kv_heads, generated, head_dim]


class SharedPromptLayer(CacheLayerMixin):
    """A cache layer holding the prompt's keys/values once per request and the beams' generated ones."""

    is_sliding = False
    is_croppable = False

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, prompt_mask: torch.Tensor, beams: int,
                 capacity: int):
        super().__init__()
        self.prompt_keys, self.prompt_values, self.prompt_mask = keys, values, prompt_mask
        self.beams, self.capacity, self.length = beams, capacity, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        rows, heads, _, dim = key_states.shape
        self.keys = key_states.new_empty((rows, heads, self.capacity, dim))
        self.values = value_states.new_empty((rows, heads, self.capacity, value_states.shape[-1]))
        self.device = key_states.device
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[SharedStates, SharedStates]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        new = key_states.shape[-2]
        if self.length + new > self.capacity:
            raise RuntimeError(f"shared-prompt cache full: {self.capacity} generated positions were allocated")
        self.keys[:, :, self.length:self.length + new] = key_states
        self.values[:, :, self.length:self.length + new] = value_states
        self.length += new
        return (SharedStates(self.prompt_keys, self.prompt_mask, self.keys[:, :, :self.length]),
                SharedStates(self.prompt_values, self.prompt_mask, self.values[:, :, :self.length]))

    def get_seq_length(self) -> int:
        return self.prompt_keys.shape[-2] + self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return self.prompt_keys.shape[-2] + self.capacity

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Only the generated part moves with its beam; the shared prompt never does."""
        if self.length:
            index = beam_idx.to(self.keys.device)
            self.keys[:, :, :self.length] = self.keys[index, :, :self.length]
            self.values[:, :, :self.length] = self.values[index, :, :self.length]

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("the shared-prompt cache is built per beam already")

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        raise NotImplementedError("the shared-prompt cache keeps every request of its batch")


def shared_prompt_attention(module: Any, query: torch.Tensor, key: SharedStates, value: SharedStates,
                            attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                            **kwargs: Any) -> tuple[torch.Tensor, None]:
    """One decoding step of every beam: softmax over [shared prompt, own generated tokens], in fp32."""
    if kwargs.get("sliding_window") or kwargs.get("softcap"):
        raise NotImplementedError("shared-prompt attention has no sliding window or soft-capping")
    rows, query_heads, steps, dim = query.shape
    if steps != 1:
        raise RuntimeError("shared-prompt attention decodes one token per beam at a time")
    requests, kv_heads = key.prompt.shape[:2]
    beams, group = rows // requests, query_heads // kv_heads
    scale = scaling if scaling is not None else dim ** -0.5
    # Query head h reads kv head h // group (transformers' repeat_kv order).
    with torch.autocast(query.device.type, enabled=False):  # fp32 even under a bf16 autocast
        out = _shared_attention(query.reshape(requests, beams, kv_heads, group, dim).float(), key, value, scale)
    return out.reshape(rows, 1, query_heads, -1).to(query.dtype), None


def _shared_attention(q: torch.Tensor, key: SharedStates, value: SharedStates, scale: float) -> torch.Tensor:
    requests, beams, kv_heads, _, dim = q.shape
    prompt_scores = torch.einsum("bmhgd,bhld->bmhgl", q, key.prompt.float()) * scale
    prompt_scores = prompt_scores.masked_fill(~key.prompt_mask[:, None, None, None, :], float("-inf"))
    own_keys = key.beams.reshape(requests, beams, kv_heads, -1, dim).float()
    own_scores = torch.einsum("bmhgd,bmhtd->bmhgt", q, own_keys) * scale
    weights = torch.cat([prompt_scores, own_scores], dim=-1).softmax(dim=-1)
    split = key.prompt.shape[-2]
    own_values = value.beams.reshape(requests, beams, kv_heads, -1, value.beams.shape[-1]).float()
    return (torch.einsum("bmhgl,bhld->bmhgd", weights[..., :split], value.prompt.float())
            + torch.einsum("bmhgt,bmhtd->bmhgd", weights[..., split:], own_values))


AttentionInterface.register(ATTENTION_NAME, shared_prompt_attention)


def shares_prompt(model: Any) -> bool:
    """Whether `model` decodes through the attention interface and cache this module plugs into."""
    config = getattr(model, "config", None)
    return (config is not None and not getattr(config, "is_encoder_decoder", False)
            and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
            and not getattr(config, "sliding_window", None)
            and not getattr(config, "attn_logit_softcapping", None))


def _encoded_prompts(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, beams: int,
                     capacity: int) -> Cache:
    """Run all but the last prompt token once per request; the cache `generate` continues from."""
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    prefix, mask = input_ids[:, :-1], attention_mask[:, :-1].bool()
    if prefix.shape[1]:
        out = model(input_ids=prefix, attention_mask=attention_mask[:, :-1], position_ids=positions[:, :-1],
                    use_cache=True, logits_to_keep=1)  # the keys/values are wanted, not every position's logits
        encoded = getattr(out, "cache", None) or out.past_key_values
        pairs = [(layer.keys, layer.values) for layer in encoded.layers]
    else:  # one-token prompts: nothing to share
        heads = model.config.num_key_value_heads
        dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
        empty = input_ids.new_zeros((input_ids.shape[0], heads, 0, dim), dtype=model.dtype)
        pairs = [(empty, empty)] * model.config.num_hidden_layers
    return Cache(layers=[SharedPromptLayer(keys, values, mask, beams, capacity) for keys, values in pairs])


def beam_generate(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, num_beams: int,
                  max_new_tokens: int, prefix_allowed_tokens_fn: Callable | None = None,
                  **generate_kwargs: Any) -> Any:
    """`model.generate(input_ids, attention_mask, num_beams=..., max_new_tokens=..., ...)` with the prompt
    encoded once per request (left-padded batches); the same output as plain beam search."""
    if not shares_prompt(model) or num_beams < 2:
        return model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                              max_new_tokens=max_new_tokens, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                              **generate_kwargs)
    with torch.no_grad():
        cache = _encoded_prompts(model, input_ids, attention_mask, num_beams, capacity=max_new_tokens + 1)
        with attention_kernel(model, ATTENTION_NAME):
            return model.generate(input_ids=input_ids, attention_mask=attention_mask, num_beams=num_beams,
                                  max_new_tokens=max_new_tokens, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
                                  cache=cache, **generate_kwargs)
