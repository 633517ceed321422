"""CoVE = a causal LM (with LoRA) whose vocabulary is extended by one token per item.

The base vocabulary's embedding and head stay frozen; item tokens read their input vector
from `item_embedding` and are scored by `item_head` (both possibly hashed, item_layers.py).
Ranking is one forward pass: the hidden state at the prompt's last position is scored
against every item (CoVE §3.3), never against the base vocabulary.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from methods.cove.item_layers import ItemEmbedding, ItemHead


class CoVEModel(nn.Module):
    def __init__(self, lm: nn.Module, base_vocab: int, num_items: int, ratio: int = 1, num_hashes: int = 4,
                 hash_seed: int = 0) -> None:
        super().__init__()
        self.lm = lm  # the causal LM, usually peft-wrapped
        self.base_vocab, self.num_items = base_vocab, num_items
        dim = self.causal_lm.config.hidden_size
        base_rows = self.causal_lm.get_input_embeddings().weight
        # Same hash functions for both tables (as in the authors' code); separate parameters, on
        # the backbone's device.
        self.item_embedding = ItemEmbedding(num_items, dim, ratio, num_hashes, hash_seed, device=base_rows.device)
        self.item_head = ItemHead(num_items, dim, ratio, num_hashes, hash_seed, device=base_rows.device)
        self.item_embedding.init_like(base_rows)
        # The head keeps xavier-uniform rows (authors: nn.Linear's default, U(±1/sqrt(d)); a recorded
        # deviation). Rows drawn at the vocabulary's scale gave item logits so spread that the first
        # loss was ~21 instead of ~log N = 9.4, and one short CPU epoch could not recover from it.

    @property
    def causal_lm(self) -> Any:
        """The underlying transformers model (LoRA layers injected in place by peft)."""
        return self.lm.get_base_model() if hasattr(self.lm, "get_base_model") else self.lm

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Token ids < V use the frozen base table; ids V + i use item i's (hashed) vector."""
        is_item = input_ids >= self.base_vocab
        base = self.causal_lm.get_input_embeddings()(input_ids.clamp(max=self.base_vocab - 1))
        items = self.item_embedding((input_ids - self.base_vocab).clamp(min=0))
        return torch.where(is_item[..., None], items.to(base.dtype), base)

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Final-layer hidden states (B, T, d). Positions count real tokens only, so a left-padded
        prompt sees the same positions as it would unpadded."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        out = self.causal_lm.get_decoder()(inputs_embeds=self.embed(input_ids), attention_mask=attention_mask,
                                           position_ids=position_ids, use_cache=False)
        return out.last_hidden_state

    def item_scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, N) next-item logits at the last position of left-padded prompts."""
        return self.item_head(self.hidden_states(input_ids, attention_mask)[:, -1])

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over base vocabulary + items (V + N), for the all-tokens language-model loss."""
        base = self.causal_lm.get_output_embeddings()(hidden)
        return torch.cat([base.float(), self.item_head(hidden)], dim=-1)

    # -- what is trained and saved ---------------------------------------------------------

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """LoRA + item tables, even a frozen (randomly initialised) item embedding, plus the tables'
        hash codes so a checkpoint from another hashing config is refused."""
        state = {name: p for name, p in self.named_parameters() if p.requires_grad or name.startswith("item_")}
        state.update({name: b for name, b in self.named_buffers() if name.endswith("codes")})
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        own = self.trainable_state()
        if set(state) != set(own):
            missing, extra = sorted(set(own) - set(state))[:3], sorted(set(state) - set(own))[:3]
            raise ValueError(f"checkpoint does not match the model (missing {missing}, unexpected {extra})")
        from methods.cove.sharding import copy_into

        with torch.no_grad():
            for name, tensor in own.items():
                if name.endswith("codes"):
                    if not torch.equal(tensor.long(), state[name].to(tensor.device).long()):
                        raise ValueError(f"checkpoint hash codes differ from this config's ({name})")
                else:
                    copy_into(tensor, state[name])  # an FSDP-sharded parameter keeps its own shard


def freeze_base(lm: nn.Module) -> None:
    for p in lm.parameters():
        p.requires_grad_(False)


def attach_lora(lm: nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> nn.Module:
    """Freeze the LM and add LoRA adapters (rank 0: no adapters, the LM stays frozen)."""
    freeze_base(lm)
    if rank <= 0:
        return lm
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(lm, config)
