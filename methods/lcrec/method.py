"""LC-Rec-style generative retrieval on a causal LLM (Zheng et al., ICDE 2024): every item is written as its
semantic ID in new vocabulary tokens (one per level, the codes TIGER builds), LoRA and the new tokens'
embeddings are trained on the sequential task, and the next item is decoded by beam search constrained to the
catalogue (beam 20), the prompt encoded once per request and shared by the beams (bench.train.beam_search).

It exists to compare two ways of naming items on the same backbone: CoVE's one token per item, ranked by one
forward pass, against several tokens per item, decoded. Deviations from the paper are in `describe()`.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from bench.data.types import Dataset
from bench.errors import BenchError
from bench.method import Method, RunContext
from methods.lcrec.settings import LCRecSettings, parse_settings


def deviations(s: LCRecSettings) -> list[str]:
    """How this run differs from the authors' code (RUCAIBox/LC-Rec: finetune.py, run.sh, data.py, prompt.py)."""
    out = ["trained on the sequential task only (LC-Rec adds item-index/language alignment tasks)",
           "one fixed ID-only prompt; the loss covers a user's whole sequence in one pass (LC-Rec: one of 17 "
           "Alpaca-style templates sampled per example, one example per prefix, tested over all templates)",
           f"semantic IDs: {s.levels} levels x {s.codebook_size} from the RQ-VAE over MiniLM item-text embeddings "
           "shared with TIGER, plus a collision digit (LC-Rec: 4 levels x 256 over LLaMA title+description "
           "embeddings, Sinkhorn on the last level for collided items)",
           f"LoRA rank {s.lora_rank} (alpha {s.lora_alpha}) on {', '.join(s.lora_targets)} and the new code tokens' "
           f"rows, lr {s.learning_rate:g}, {s.epochs} epochs, last epoch kept (LC-Rec's run.sh: full fine-tuning, "
           "lr 5e-5, 4 epochs, cosine, best checkpoint on validation)",
           f"histories up to {s.max_history} items (LC-Rec and genrec: 20)",
           "decoding: exactly one semantic ID per beam, constrained to the catalogue trie, no EOS (LC-Rec: any "
           "code seen at each position, then EOS, up to 10 new tokens, ranked by sequence score with EOS)"]
    if s.beam_size != 20:
        out.append(f"beam size {s.beam_size} (LC-Rec: 20)")
    if s.model == "smollm2":
        out.append("backbone SmolLM2-135M-Instruct (LC-Rec: LLaMA-7B; the genrec reproduction: Qwen3-1.7B)")
    return out


class LCRecMethod(Method):
    name = "lcrec"
    loads_finished_runs = True
    scores_every_item = False  # the beam's items, the rest tied below (eval.mask_history is refused)
    settings_parser = staticmethod(parse_settings)

    def __init__(self, config: dict[str, Any], context: RunContext) -> None:
        super().__init__(config, context)
        self.model: Any = None
        self.report: dict[str, Any] = {}
        self.id_facts: dict[str, Any] = {}
        self.precision = "fp32"
        self.train_subsample: dict[str, Any] | None = None

    # -- setup ----------------------------------------------------------------------------

    def _load(self, dataset: Dataset) -> None:
        from peft import LoraConfig, get_peft_model

        from bench.train.backbone import backbone_name, load_backbone
        from bench.train.precision import resolve_precision, store_frozen_in_bf16
        from methods.lcrec.codes import add_code_tokens
        from methods.lcrec.prompts import PromptPieces
        from methods.semantic_ids.catalogue import catalogue_semantic_ids
        from methods.semantic_ids.trie import CatalogueTrie

        s, ctx = self.settings, self.context
        ids, self.id_facts = catalogue_semantic_ids(dataset, s.rqvae, ctx.cache_dir, device=ctx.device,
                                                    seed=ctx.seed, log=ctx.log)
        dtype = torch.bfloat16 if ctx.device.startswith("cuda") else torch.float32
        base, tokenizer = load_backbone(s.model, ctx.device, ctx.cache_dir, dtype=dtype)
        self.backbone_label = backbone_name(base, s.model)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.backbone_params = sum(p.numel() for p in base.parameters())
        self.item_tokens = add_code_tokens(tokenizer, ids)
        torch.manual_seed(ctx.seed)  # the new rows' initial values (trained and saved in full afterwards)
        base.resize_token_embeddings(len(tokenizer))
        new_tokens = sorted(int(t) for t in np.unique(self.item_tokens))
        # Tied heads follow the embedding's trainable rows (PEFT ties them); an untied head needs its own.
        tied = getattr(base.config, "tie_word_embeddings", True)
        trainable = new_tokens if tied else {"embed_tokens": new_tokens, "lm_head": new_tokens}
        lora = LoraConfig(r=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                          target_modules=list(s.lora_targets), bias="none", task_type="CAUSAL_LM",
                          trainable_token_indices=trainable)
        try:
            self.model = get_peft_model(base, lora)
        except ValueError as error:
            raise BenchError(f"bench.toml [lcrec].lora_targets: {error}") from error
        self.precision = resolve_precision(s.precision, ctx.device, ctx.log, "lcrec")
        if self.precision == "bf16" and not ctx.device.startswith("cuda"):
            store_frozen_in_bf16(self.model)
        self.model.eval()
        self.tokenizer = tokenizer
        self.trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        self.pieces = PromptPieces.build(tokenizer, self.item_tokens)
        try:
            self.trie = CatalogueTrie(self.item_tokens)
        except BenchError as error:
            raise BenchError(f"lcrec: {error}") from error
        self.num_items = dataset.num_items

    # -- training -------------------------------------------------------------------------

    def fit(self, dataset: Dataset) -> None:
        from bench.settings import training_identity
        from bench.train.lora_trainer import LoRATrainer

        self._load(dataset)
        s, ctx = self.settings, self.context
        users = [u for u, seq in enumerate(dataset.split.train) if len(seq) >= 2]
        if 0 < s.max_train_users < len(users):
            users = sorted(random.Random(ctx.seed).sample(users, s.max_train_users))
            # A model trained on some users is no full-data row (the record's subsample says so, as CoVE's).
            self.train_subsample = {"max_train_users": s.max_train_users, "seed": ctx.seed, "users": len(users)}
        if not users and s.epochs > 0:
            raise BenchError(f"dataset {dataset.name}: no user has two training items, so LC-Rec has nothing to "
                             "train on (set lcrec.epochs=0 to rank with the untrained model)")
        examples = [self.pieces.training_sequence(dataset.split.train[u], s.max_history) for u in users]
        self.train_users, self.train_tokens = len(users), sum(len(e.input_ids) for e in examples)
        budgets = [m for m in (ctx.max_train_minutes, s.max_train_minutes or None) if m]
        trainer = LoRATrainer(self.model, self.tokenizer.pad_token_id, examples, s, ctx.work_dir,
                              key_extra={"settings": training_identity(s.as_dict(), ctx.hash_neutral),
                                         "dataset": dataset.name,
                                         "split": dataset.split.hash, "ids": self.id_facts.get("file")},
                              name="lcrec", seed=ctx.seed, device=ctx.device, precision=self.precision,
                              budget_minutes=min(budgets) if budgets else None,
                              validate=(lambda: ctx.validate(self)) if ctx.validate is not None and s.patience
                              else None,
                              log=ctx.log, resume_only=ctx.resume_only)
        self.report = trainer.train() if examples else {}
        self.model.eval()
        self.scoring_counts.clear()  # validation's decoding not counted

    # -- ranking --------------------------------------------------------------------------

    @property
    def beams(self) -> int:
        return min(self.settings.beam_size, self.num_items)

    @torch.no_grad()
    def score(self, users: list[int], histories: list[list[int]]) -> torch.Tensor:
        """The beams' items scored by their beam order (best first); every other item gets -inf (ties below
        them), so HR/NDCG@K are exact for K <= beam_size."""
        from transformers import LogitsProcessorList

        from bench.train.beam_search import beam_generate
        from bench.train.precision import autocast
        from methods.semantic_ids.trie import TrieConstraint

        device, pad = self.context.device, self.tokenizer.pad_token_id
        prompts = [self.pieces.request(history, self.settings.max_history) for history in histories]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        depth, beams = self.trie.depth, self.beams
        self.scoring_counts["requests"] += len(prompts)
        self.scoring_counts["prompt_tokens"] += sum(map(len, prompts))
        self.scoring_counts["padded_prompt_tokens"] += width * len(prompts)

        constraint = LogitsProcessorList([TrieConstraint(self.trie, prompt_width=width, after_last=pad)])
        with autocast(device, self.precision):  # Hugging Face's beam search adds log-probabilities in fp32
            out = beam_generate(self.model, ids, mask, num_beams=beams, num_return_sequences=beams,
                                max_new_tokens=depth, min_new_tokens=depth, do_sample=False,
                                logits_processor=constraint, eos_token_id=self.tokenizer.eos_token_id,
                                pad_token_id=pad,
                                # a model folder's own generation_config must not reshape the beams
                                repetition_penalty=1.0, no_repeat_ngram_size=0, length_penalty=1.0)
        items = self.trie.items(out[:, width:width + depth]).view(len(histories), beams).tolist()
        scores = torch.full((len(histories), self.num_items), float("-inf"))
        for row, beam_items in enumerate(items):
            for position, item in enumerate(beam_items):
                if item >= 0 and scores[row, item] == float("-inf"):
                    scores[row, item] = float(beams - position)
        return scores

    def describe(self) -> dict[str, Any]:
        from bench.train.lifecycle import training_facts

        s = self.settings
        loaded = self.model is not None
        counts = self.scoring_counts
        prompt_tokens = (round(counts["prompt_tokens"] / counts["requests"], 2)
                         if counts["requests"] and loaded else None)
        return {
            "backbone": getattr(self, "backbone_label", None),
            "backbone_params": getattr(self, "backbone_params", None),
            "trainable_params": getattr(self, "trainable_params", None),
            "semantic_ids": self.id_facts,
            "id_length": self.trie.depth if loaded else None,
            "code_tokens_added": int(len(np.unique(self.item_tokens))) if loaded else None,
            "train_users": getattr(self, "train_users", None),
            "train_tokens": getattr(self, "train_tokens", None),
            "train_mode": "one sequence per user, loss on the codes of every item after the first",
            "batching": ("length-bucketed micro-batches, each weighted by its labelled tokens (the step's token "
                         "mean)" if s.length_buckets else "random micro-batches, each its token mean / grad_accum"),
            "ranking": (f"top-{self.beams} by beam search constrained to catalogue IDs, ordered by beam score; "
                        f"other items tie below them (HR/NDCG@K exact for K <= {self.beams})") if loaded else None,
            "decoding": "Hugging Face beam search, the prompt encoded once per request and shared by its beams",
            "beam_size": s.beam_size,
            "precision": self.precision,
            "generated_tokens_per_sample": self.trie.depth if loaded else None,
            # Tokens a request costs: its prompt once (shared by the beams), then depth steps of `beams` tokens.
            "prompt_tokens_per_request": prompt_tokens,
            "tokens_per_request": (None if prompt_tokens is None
                                   else round(prompt_tokens + self.trie.depth * self.beams, 2)),
            "scoring_padding_fraction": (round(1 - counts["prompt_tokens"] / counts["padded_prompt_tokens"], 4)
                                         if counts["padded_prompt_tokens"] else None),
            "decode_length_fixed": f"{self.trie.depth} ID tokens on each of {self.beams} beams" if loaded else None,
            **training_facts(self.report, s.epochs, s.patience),
            "setting": s.preset,
            "deviations": deviations(s),
            **({"train_subsample": self.train_subsample} if self.train_subsample else {}),
        }
