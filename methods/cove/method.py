"""CoVE (Zhang et al., ACL 2025, arXiv 2506.19993) as a recbench method.

Every item is a token `<|i|>` with its own (optionally hashed) input embedding and output-head
row; the LLM is fine-tuned with LoRA to predict the next item's token after a prompt listing
the history, and ranking is a single forward pass scored over the item tokens only.
Deviations from the authors' runs are listed by `deviations(settings)` and recorded with every result.
"""

from __future__ import annotations

import random
from dataclasses import asdict
from typing import Any

from bench.data.types import Dataset
from bench.errors import BenchError
from bench.method import Method, RunContext
from bench.settings import jsonable, training_identity
from methods.cove.settings import SCORING_ONLY_KEYS, deviations, parse_settings, setting_name


def choose_users(train: list[list[int]], max_users: int, seed: int) -> list[int]:
    """Users with at least two training items; a seeded random subsample when max_users > 0."""
    eligible = [u for u, seq in enumerate(train) if len(seq) >= 2]
    if 0 < max_users < len(eligible):
        eligible = sorted(random.Random(seed).sample(eligible, max_users))
    return eligible


class CoVEMethod(Method):
    name = "cove"
    data_parallel = True  # its trainer splits every batch over torchrun's ranks and sums gradients
    scores_item_slices = True  # encode() + score_items(): huge catalogues are ranked in item chunks
    loads_finished_runs = True
    # How the trained model is scored, never how it trains: `bench evaluate` may change these on a record's
    # own weights (e.g. compile_scoring=true, timed on the same requests as the eager record).
    evaluation_keys = ("compile_scoring", "eval_batch_size", "max_padding")

    settings_parser = staticmethod(parse_settings)

    def __init__(self, config: dict[str, Any], context: RunContext) -> None:
        super().__init__(config, context)
        self.model: Any = None
        self.encoder: Any = None
        self._last_states: Any = None  # the scoring forward (methods.cove.scoring.last_states_forward)
        self.precision = "fp32"
        self._info: dict[str, Any] = {}

    # -- setup ----------------------------------------------------------------------------

    def _build(self, dataset: Dataset) -> None:
        from bench.train.backbone import backbone_name
        from bench.train.precision import resolve_precision
        from methods.cove.item_layers import item_table_bytes
        from methods.cove.prompts import TOKENIZER_ITEM_LIMIT, PromptEncoder, PromptSettings

        s, device = self.settings, self.context.device
        self.precision = resolve_precision(s.precision, device, self.context.log, "cove")
        model, tokenizer, base_vocab, lm = self._new_model(dataset, device, frozen_bf16=self.precision == "bf16")
        backbone_params = sum(p.numel() for n, p in lm.named_parameters() if "lora_" not in n)
        self._info["item_tokens_in_tokenizer"] = dataset.num_items <= TOKENIZER_ITEM_LIMIT
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.encoder = PromptEncoder(tokenizer, dataset.catalogue, base_vocab,
                                     PromptSettings(s.use_titles, s.max_title_words, s.max_history,
                                                    s.max_prompt_tokens))
        tables = (model.item_embedding, model.item_head)
        self._info.update(
            backbone=backbone_name(lm, s.model),
            backbone_params=backbone_params,
            base_vocab=base_vocab,
            trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
            lora_params=sum(p.numel() for n, p in model.named_parameters() if "lora_" in n),
            item_table_rows=model.item_head.weight.shape[0],
            item_table_params=sum(t.weight.numel() for t in tables),
            item_table_bytes=item_table_bytes(*tables),
            item_table_bytes_uncompressed=2 * dataset.num_items * model.item_head.dim * 4,
            hashes_per_item=model.item_head.num_hashes,
        )

    def _new_model(self, dataset: Dataset, device: str, frozen_bf16: bool) -> tuple[Any, Any, int, Any]:
        """Backbone + LoRA + item tables, initialised from the run's seed: every call builds the same
        model (the FSDP training copy and the scoring copy start equal). Returns (model, tokenizer, base
        vocabulary size, the peft-wrapped LM)."""
        import torch

        from bench.train.backbone import load_backbone
        from bench.train.precision import store_frozen_in_bf16
        from methods.cove.model import CoVEModel, attach_lora
        from methods.cove.prompts import add_item_tokens

        s = self.settings
        lm, tokenizer = load_backbone(s.model, device, self.context.cache_dir)
        base_vocab = add_item_tokens(tokenizer, dataset.num_items, lm.get_input_embeddings().weight.shape[0])
        torch.manual_seed(self.context.seed)  # LoRA and item-table initialisation repeat for a seed
        try:
            lm = attach_lora(lm, s.lora_rank, s.lora_alpha, s.lora_dropout, list(s.lora_targets))
        except ValueError as error:
            raise BenchError(f"bench.toml [cove].lora_targets: {error}") from error
        if frozen_bf16 and not device.startswith("cuda"):
            store_frozen_in_bf16(lm)
        model = CoVEModel(lm, base_vocab, dataset.num_items, s.compression_ratio, s.num_hashes, s.hash_seed)
        model.causal_lm.config.vocab_size = base_vocab + dataset.num_items  # the extended vocabulary
        model.item_embedding.weight.requires_grad_(not s.freeze_item_embeddings)
        return model, tokenizer, base_vocab, lm

    def _training_model(self, dataset: Dataset) -> Any:
        """The model the trainer steps: the scoring model itself, or with `fsdp` a sharded copy (built on
        the CPU, each layer's shard moved to this rank's device by fully_shard; fp32 weights: one dtype per
        sharded group, bf16 still through autocast)."""
        from bench.train.distributed import world
        from methods.cove.sharding import shard_for_training

        s = self.settings
        if not s.fsdp or self.context.resume_only:  # loading a finished run needs no shards: files hold whole tensors
            return self.model
        if world()[1] < 2:
            raise BenchError("bench.toml [cove].fsdp = true: shards training over torchrun's processes; launch "
                             "with torchrun --nproc-per-node N (N >= 2) or set it to false")
        model = self._new_model(dataset, "cpu" if self.context.device.startswith("cuda") else self.context.device,
                                frozen_bf16=False)[0]
        self._info["sharding"] = "FSDP2 (torch fully_shard): each decoder layer, the item head and the root"
        return shard_for_training(model.train(), self.context.device)

    def _refresh_scoring_model(self, trained: Any) -> None:
        """The scoring copy takes the training copy's LoRA and item tables (gathered whole if sharded)."""
        from methods.cove.sharding import full_tensors

        if trained is not self.model:
            self.model.load_trainable_state(full_tensors(trained.trainable_state()))

    # -- training -------------------------------------------------------------------------

    def fit(self, dataset: Dataset) -> None:
        from methods.cove.trainer import Sample, Trainer

        self._build(dataset)
        s, ctx = self.settings, self.context
        users = choose_users(dataset.split.train, s.max_train_users, ctx.seed)
        samples = []
        for user in users:
            seq = dataset.split.train[user]
            # "sequence" loss: one sample per user whose text holds every training item.
            ends = [len(seq) - 1] if s.train_samples == "last" or s.loss == "sequence" else range(1, len(seq))
            for end in ends:
                history, target = seq[:end], seq[end]
                samples.append(Sample(self.encoder.prompt(history), target,
                                      self.encoder.training_sequence(history, target)))
        if s.max_train_users:
            self._info["train_subsample"] = {"max_train_users": s.max_train_users, "seed": ctx.seed,
                                             "users": len(users)}
        self._info.update(train_users=len(users), train_examples=len(samples))
        if not samples or s.epochs == 0:
            if s.epochs > 0:
                raise BenchError(f"dataset {dataset.name}: no user has two training items; CoVE has nothing to learn")
            self._info.update(epochs_run=0, epochs_max=0, stopped_by="epochs = 0")
            return
        budgets = [m for m in (s.max_train_minutes, ctx.max_train_minutes or 0) if m > 0]
        fingerprint = {"dataset": dataset.name, "split": dataset.split.hash, "num_items": dataset.num_items,
                       # SCORING_ONLY_KEYS are left out: a finished run stays loadable.
                       "cove": training_identity(asdict(s), ctx.hash_neutral, leave_out=SCORING_ONLY_KEYS,
                                                 hashed_before=("precision", "length_buckets")),
                       "examples": len(samples)}
        fingerprint = jsonable(fingerprint)
        # With one epoch there is nothing to choose between: validating would only cost time
        # (for an LLM on CPU, as long as the test pass itself).
        training_model = self._training_model(dataset)

        def validate_scoring_copy() -> float:
            self._refresh_scoring_model(training_model)
            return ctx.validate(self)

        validate = validate_scoring_copy if ctx.validate is not None and s.epochs > 1 else None
        trainer = Trainer(training_model, samples, s, seed=ctx.seed, precision=self.precision,
                          budget_minutes=min(budgets) if budgets else None, work_dir=ctx.work_dir, device=ctx.device,
                          pad_id=self.tokenizer.pad_token_id, validate=validate, log=ctx.log,
                          fingerprint=fingerprint, resume_only=ctx.resume_only)
        progress = trainer.train()
        self._refresh_scoring_model(training_model)
        # describe() reports the evaluation's padding and tokens only
        self.scoring_counts.clear()
        from bench.train.distributed import sum_over_ranks
        from bench.train.lifecycle import training_facts

        padded = progress.get("padded_tokens") or 0
        everyone = sum_over_ranks(progress["real_tokens"])  # under torchrun each rank trained its slices
        self._info.update(training_facts(progress, s.epochs, s.patience),
                          padding_fraction=round(1 - progress["real_tokens"] / padded, 4) if padded else None,
                          tokens_per_sec=round(everyone / progress["train_seconds"], 1)
                          if progress["train_seconds"] else None,
                          tokens_trained=int(everyone), tokens_trained_by_this_rank=int(progress["real_tokens"]))

    # -- ranking --------------------------------------------------------------------------

    def score(self, users: list[int], histories: list[list[int]]) -> Any:
        """(B, N) item logits from one forward pass per chunk; no generation, no base-vocab logits."""
        return self.score_items(self.encode(users, histories), 0, self.model.num_items)

    def encode(self, users: list[int], histories: list[list[int]]) -> Any:
        """What the item head reads for each request, computed once per batch: the last-position hidden
        states (B, d) projected by `ItemHead.project`, so a huge catalogue can be scored a slice at a time
        (bench.runs.evaluate streams it) without redoing the |S| x d product per slice."""
        import torch

        from bench.train.precision import autocast
        from bench.train.resources import trim_heap
        from methods.cove.scoring import last_states_forward, scoring_chunks
        from methods.cove.trainer import pad_left

        if self.model is None:
            raise RuntimeError("CoVE.score called before fit()")
        self.model.eval()
        device, s = self.context.device, self.settings
        prompts = [self.encoder.prompt(h) for h in histories]
        self.scoring_counts["requests"] += len(prompts)
        # length_buckets: forward prompts of similar length together (less padding), states put back
        # in request order; otherwise in request order, eval_batch_size at a time.
        hidden = torch.empty(len(prompts), self.model.item_head.dim, device=device)
        if self._last_states is None:
            self._last_states = last_states_forward(self, s.compile_scoring)
        with torch.no_grad(), autocast(device, self.precision):
            chunks = scoring_chunks([len(p) for p in prompts], s.eval_batch_size, s.length_buckets, s.max_padding)
            for number, rows in enumerate(chunks):
                ids, mask = pad_left([prompts[i] for i in rows], self.tokenizer.pad_token_id, device)
                hidden[rows] = self._last_states(ids, mask)
                self.scoring_counts["prompt_tokens"] += int(mask.sum())
                self.scoring_counts["padded_prompt_tokens"] += mask.numel()
                if number % 25 == 24 and device == "cpu":
                    trim_heap()  # prompts of varying length fragment the heap (bench.train.resources.trim_heap)
            return self.model.item_head.project(hidden)  # inside no_grad: no autograd graph on P

    def score_items(self, encoded: Any, start: int, end: int) -> Any:
        """fp32 logits of items start..end-1 for encoded requests, on the CPU."""
        import torch

        with torch.no_grad():
            return self.model.item_head.logits_from(encoded, start, end).cpu()

    def score_targets(self, encoded: Any, targets: list[int]) -> Any | None:
        """Each request's target logit straight from the hashed head (saves the evaluator a pass over the
        targets' slices); None at ratio 1."""
        import torch

        with torch.no_grad():
            index = torch.as_tensor(targets, device=self.model.item_head.codes.device)
            scores = self.model.item_head.target_logits_from(encoded, index)
            return None if scores is None else scores.cpu()

    def describe(self) -> dict[str, Any]:
        from methods.cove.item_layers import item_softmax_form

        s, counts = self.settings, self.scoring_counts
        info = {
            "backbone_spec": s.model,
            "compression_ratio": s.compression_ratio,
            "num_hashes": s.num_hashes if s.compression_ratio > 1 else None,
            "train_mode": ("one sequence per user" if s.loss == "sequence" else
                           "one sample per user" if s.train_samples == "last" else "all prefixes"),
            "loss": LOSS_DESCRIPTIONS[s.loss],
            "item_softmax": item_softmax_form(self.model.item_head.num_items if self.model is not None else 0,
                                              s.loss, s.compression_ratio),
            "history_truncation": f"most recent {s.max_history} items" if s.max_history else "none",
            "prompt_token_cap": f"{s.max_prompt_tokens} (oldest items dropped)",
            "title_truncation": (f"first {s.max_title_words} words" if s.max_title_words else "none")
            if s.use_titles else "no titles (ID-only prompts)",
            "lora": {"rank": s.lora_rank, "alpha": s.lora_alpha, "dropout": s.lora_dropout,
                     "targets": list(s.lora_targets)},
            "item_embeddings": "frozen" if s.freeze_item_embeddings else "trained",
            "ranking": "one forward pass, last position, item head only (no generation)",
            "precision": self.precision,
            "scoring_forward": "torch.compile" if self.settings.compile_scoring else "eager",
            "scoring_padding_fraction": (round(1 - counts["prompt_tokens"] / counts["padded_prompt_tokens"], 4)
                                         if counts["padded_prompt_tokens"] else None),
            # Tokens a request costs: its prompt, one forward pass (no generation).
            "tokens_per_request": (round(counts["prompt_tokens"] / counts["requests"], 2)
                                   if counts["requests"] else None),
            "setting": setting_name(s),
            "deviations": deviations(s),
            **self._info,
        }
        return info


LOSS_DESCRIPTIONS = {"item": "item token only", "sequence": "item token at every item position",
                     "all_tokens": "all tokens"}

