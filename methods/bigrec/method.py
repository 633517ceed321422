"""BIGRec (Bao et al. 2023): fine-tune an LLM to write the next item's title, then ground it.

Step 1 (trainer.py): LoRA on an Alpaca-style prompt listing the history as quoted titles.
Step 2 (generate.py, grounding.py): beam search writes a title; the top beam's embedding is
compared with every item title's embedding; score = -distance (optionally adjusted by
popularity, adjust.py). Deviations from the authors' runs are listed in DEVIATIONS and
recorded with every result.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from bench.data.types import Dataset
from bench.errors import BenchError
from bench.method import Method, RunContext
from bench.settings import training_identity
from methods.bigrec.adjust import GAMMA_GRID, adjusted_distance, popularity
from methods.bigrec.prompts import build_prompt, build_response, encode_example, shorten_title, unquote
from methods.bigrec.samples import choose_users, subsample_record, training_samples
from methods.bigrec.settings import BIGRecSettings, parse_settings

# A prompt longer than MAX_PROMPT_TOKENS drops its oldest titles (in training and inference
# alike); MAX_SEQUENCE_TOKENS is the last-resort cut of prompt + response. (The authors cut
# at 512 from the right, which can drop the target itself.)
MAX_PROMPT_TOKENS = 896
# [hash_neutral] keys BIGRec's training key held before neutral keys left work-dir keys: they stay in, so
# the work dirs made then (a multi-session few-shot run) still resume. Keys added later drop out at neutral.
KEYED_BEFORE_NEUTRAL_RULE = ("decode_length", "precision", "selection", "valid_loss_users", "length_sorted_steps")
MAX_SEQUENCE_TOKENS = 1024
# The authors' recipe (../shared/PROTOCOLS.md, their train and inference scripts): a run that changes one of these
# lists it among its deviations, so a tuned learning rate never passes for their recipe.
AUTHORS_SETTINGS = {"learning_rate": 1e-4, "batch": 128, "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.05,
                    "lora_targets": ["q_proj", "v_proj"], "epochs": 50, "patience": 5, "warmup_steps": 20,
                    "max_new_tokens": 128}

DEVIATIONS = [
    "backbone: the configured model (SmolLM2-135M-Instruct by default), not LLaMA-7B in 8-bit",
    "prompt wording generic ('items ... bought') instead of per-domain ('video games ... played')",
    "training samples from the harness split (train_samples), not the authors' 10-item sliding windows",
    "embedding forward passes position ids from the attention mask (authors' left padding shifted them)",
    "items with identical titles tie; the shared evaluator ranks ties pessimistically (authors: best rank)",
    "prompts over 896 tokens drop their oldest titles (authors: right cut at 512 tokens)",
    "one beam returned (authors returned 4, grounded the first)",
    "gamma grid includes 0 (plain BIGRec) besides the authors' 0.01..1 and 1..99",
    "a time budget that stops training mid-epoch validates that partial epoch and keeps it if best (as CoVE)",
]


def settings_deviations(settings: BIGRecSettings) -> list[str]:
    """One line per hyperparameter that differs from the authors' (batch = micro-batch x accumulation)."""
    ours = {"learning_rate": settings.learning_rate, "batch": settings.batch_size * settings.grad_accum,
            "lora_rank": settings.lora_rank, "lora_alpha": settings.lora_alpha, "lora_dropout": settings.lora_dropout,
            "lora_targets": list(settings.lora_targets), "epochs": settings.epochs, "patience": settings.patience,
            "warmup_steps": settings.warmup_steps, "max_new_tokens": settings.max_new_tokens}
    return [f"{key} {ours[key]} (authors {authors})" for key, authors in AUTHORS_SETTINGS.items()
            if ours[key] != authors]


def setting_name(config: dict[str, Any]) -> str:
    """The row label's setting: the preset the harness applied, else 'default'."""
    return str(config.get("preset") or "default")


class BIGRecMethod(Method):
    name = "bigrec"
    data_parallel = True  # its trainer splits every micro-batch over torchrun's ranks and averages gradients
    loads_finished_runs = True
    # The second grounding step (gamma, its side score) re-scores the same weights: not part of training's key.
    evaluation_keys = ("gamma", "side_score", "reuse_generations")
    timing_overrides = {"reuse_generations": False}

    settings_parser = staticmethod(parse_settings)

    def __init__(self, config: dict[str, Any], context: RunContext) -> None:
        super().__init__(config, context)
        self.gamma: float = 0.0 if self.settings.gamma == "auto" else float(self.settings.gamma)
        self._query_cache: dict[tuple[int, ...], np.ndarray] | None = None
        self._stores: dict[str, Any] = {}  # generation stores by key (_generation_store)
        self.exact_new_tokens: int | None = None
        self.precision = "fp32"  # resolved when the backbone loads
        self._info: dict[str, Any] = {}

    # -- setup ----------------------------------------------------------------------------
    def _load(self, dataset: Dataset) -> None:
        import torch
        from peft import LoraConfig, get_peft_model

        from bench.train.backbone import backbone_name, load_backbone
        from bench.train.precision import resolve_precision, store_frozen_in_bf16
        from bench.train.text_embeddings import MiniLMEmbedder, title_embeddings
        from methods.bigrec.embedders import BaseLLMEmbedder, weights_fingerprint
        from methods.bigrec.grounding import ItemIndex

        s, device = self.settings, self.context.device
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.cache_root = self.context.cache_dir
        base, tokenizer = load_backbone(s.model, device, self.cache_root, dtype=dtype)
        self.backbone_label = backbone_name(base, s.model)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        fingerprint = weights_fingerprint(base)
        self._backbone_fingerprint = fingerprint
        self.backbone_params = sum(p.numel() for p in base.parameters())
        lora = LoraConfig(r=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                          target_modules=list(s.lora_targets), bias="none", task_type="CAUSAL_LM")
        try:
            self.model = get_peft_model(base, lora)
        except ValueError as error:
            raise BenchError(f"bench.toml [bigrec].lora_targets: {error}") from error
        self.precision = resolve_precision(s.precision, device, self.context.log, "bigrec")
        if self.precision == "bf16" and not device.startswith("cuda"):
            store_frozen_in_bf16(self.model)
            dtype = torch.bfloat16  # the title embeddings come from the bf16 weights (their cache key says so)
        self.model.eval()
        self.tokenizer = tokenizer
        self.trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        if s.embedder == "base_llm":
            self.embedder: Any = BaseLLMEmbedder(self.model, tokenizer, f"{s.model}:{fingerprint}:{dtype}",
                                                 device=device, adapter_off=self.model.disable_adapter)
        else:
            self.embedder = MiniLMEmbedder(device=device)
        self.item_texts = [shorten_title(dataset.catalogue.title_or(i), s.max_title_words)
                           for i in range(dataset.num_items)]
        vectors, reused = title_embeddings(self.embedder, self.item_texts, self.cache_root)
        backend = "faiss"
        if device.startswith("cuda"):
            import faiss

            if not (hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0):
                backend = "torch"  # faiss-cpu on a GPU machine: exact distances with torch on the GPU
        self.index = ItemIndex(vectors, self.embedder.metric, backend=backend, device=device)
        self.side = popularity(dataset.split.train, dataset.num_items)
        self.exact_new_tokens = self._exact_new_tokens()
        flat = "IndexFlatIP" if self.embedder.metric == "cosine" else "IndexFlatL2"
        self._info.update(title_embeddings="reused from cache" if reused else "computed and cached",
                          nearest_neighbour=f"faiss {flat}, k = N" if backend == "faiss" else "torch, all items")

    # -- step 1 ---------------------------------------------------------------------------
    def fit(self, dataset: Dataset) -> None:
        import torch

        from bench.train.lora_trainer import LoRATrainer, mean_token_loss

        self._load(dataset)
        s, ctx = self.settings, self.context
        users = choose_users(dataset.num_users, s.max_train_users, ctx.seed)
        samples = training_samples(dataset.split.train, users, s.train_samples, s.max_history)
        self._train_subsample = subsample_record(dataset.num_users, users, samples, ctx.seed)
        if not samples and s.epochs > 0:
            raise BenchError(f"dataset {dataset.name}: no user has two training items, so BIGRec has nothing to "
                             "fine-tune on (set bigrec.epochs=0 to ground the untrained model)")
        examples = [encode_example(self.tokenizer, self._prompt(sample.history),
                                   build_response(self.item_texts[sample.target]), s.loss, MAX_SEQUENCE_TOKENS)
                    for sample in samples]
        budgets = [m for m in (ctx.max_train_minutes, s.max_train_minutes or None) if m]
        validate = self._validate_fn(dataset)
        # Only when an epoch is chosen (more than one): a single epoch leaves nothing to select.
        valid_examples = self._valid_loss_examples(dataset) if s.selection == "valid_loss" and s.epochs > 1 else []
        if s.selection == "valid_loss":
            # The authors' criterion.
            select = (lambda: -mean_token_loss(self.model, valid_examples, self.tokenizer.pad_token_id,
                                               batch_size=s.batch_size, device=ctx.device,
                                               precision=self.precision)) if valid_examples else None
            metric = "negative validation loss"
        else:
            select = (lambda: validate(0.0)) if validate is not None and s.epochs > 1 else None
            metric = "validation NDCG@10"
        trainer = LoRATrainer(self.model, self.tokenizer.pad_token_id, examples, s, ctx.work_dir,
                              key_extra={"settings": training_identity(s.as_dict(), ctx.hash_neutral,
                                                                       leave_out=self.evaluation_keys,
                                                                       hashed_before=KEYED_BEFORE_NEUTRAL_RULE),
                                         "dataset": dataset.name,
                                         "split": dataset.split.hash},
                              name="bigrec", seed=ctx.seed, device=ctx.device, precision=self.precision,
                              budget_minutes=min(budgets) if budgets else None,
                              validate=select, metric=metric, log=ctx.log, resume_only=ctx.resume_only)
        with torch.enable_grad():
            self.progress = trainer.train() if samples else None
        self.model.eval()
        self._choose_gamma(validate)
        self._query_cache = None
        self.scoring_counts.clear()  # validation's decoding not counted

    def _valid_loss_examples(self, dataset: Dataset) -> list[Any]:
        """The validation examples whose loss picks the epoch: each validation request (history, target) of a
        seeded subsample of `valid_loss_users`, encoded as a training example."""
        s, valid = self.settings, dataset.split.valid
        positions = [j for j in range(len(valid)) if valid.histories[j]]
        if 0 < s.valid_loss_users < len(positions):
            positions = sorted(random.Random(self.context.seed + 1).sample(positions, s.valid_loss_users))
        self._info["valid_loss_examples"] = len(positions)
        return [encode_example(self.tokenizer, self._prompt(valid.histories[j]),
                               build_response(self.item_texts[valid.targets[j]]), s.loss, MAX_SEQUENCE_TOKENS)
                for j in positions]

    def _exact_new_tokens(self) -> int | None:
        """decode_length as a token count: None (stop at EOS), a number, or the mean response length
        of the catalogue (quoted title + EOS), the length a trained model writes on average."""
        length = self.settings.decode_length
        if length == "eos":
            return None
        if length == "mean_title":
            lengths = [len(self.tokenizer(build_response(text), add_special_tokens=False)["input_ids"]) + 1
                       for text in self.item_texts]
            return max(1, round(sum(lengths) / len(lengths)))
        return int(length)

    def _prompt(self, history: list[int]) -> str:
        recent = history[-self.settings.max_history:] if self.settings.max_history > 0 else history
        titles = [self.item_texts[i] for i in recent]
        prompt = build_prompt(titles)
        while len(titles) > 1 and len(self.tokenizer(prompt)["input_ids"]) > MAX_PROMPT_TOKENS:
            titles = titles[1:]
            prompt = build_prompt(titles)
        return prompt

    def _validate_fn(self, dataset: Dataset) -> Any:
        """validate(gamma) -> validation NDCG@10 through the validator the harness lends (None without one)."""
        lent = self.context.validate
        if lent is None:
            return None

        def validate(gamma: float) -> float:
            self.gamma = gamma
            return float(lent(self))

        return validate

    def _choose_gamma(self, validate: Any) -> None:
        """gamma="auto": the authors' grid on validation NDCG@10; generations are cached meanwhile. Without
        a validator (a bare RunContext) there is nothing to choose on: plain BIGRec (gamma 0), recorded."""
        if self.settings.gamma != "auto" or validate is None:
            self.gamma = 0.0 if self.settings.gamma == "auto" else float(self.settings.gamma)
            return
        self._query_cache = {}
        scores = {gamma: validate(gamma) for gamma in GAMMA_GRID}
        best = max(GAMMA_GRID, key=lambda g: (scores[g], -g))  # ties: the smaller gamma
        self.gamma = best
        self._info.update(gamma_valid_ndcg10=round(scores[best], 6),
                          gamma_plain_valid_ndcg10=round(scores[0.0], 6))

    # -- step 2 ---------------------------------------------------------------------------
    def _queries(self, histories: list[list[int]]) -> np.ndarray:
        keys = [tuple(h[-self.settings.max_history:] if self.settings.max_history > 0 else h) for h in histories]
        cache = self._query_cache
        # Every request is generated (timed honestly) unless reuse_generations; the gamma search reuses its own.
        missing = keys if cache is None else [k for k in dict.fromkeys(keys) if k not in cache]
        if missing:
            texts = self._generate([self._prompt(list(k)) for k in missing])
            vectors = self.embedder.embed([unquote(text) for text in texts])
            if cache is None:
                return vectors
            cache.update(zip(missing, vectors))
        return np.stack([cache[k] for k in keys])  # type: ignore[index]

    def _generate(self, prompts: list[str]) -> list[str]:
        """The top beam's text per prompt: decoded, or with reuse_generations read from the work dir's store
        of this decoding of these weights (every decoded text is added to it)."""
        from methods.bigrec.generate import generate

        store = self._generation_store()
        texts: list[str | None] = [None] * len(prompts)
        if self.settings.reuse_generations:
            for i, prompt in enumerate(prompts):
                stored = store.get(prompt)
                texts[i] = stored[0] if stored else None
            self.scoring_counts["generations_reused"] += sum(text is not None for text in texts)
        todo = [i for i, text in enumerate(texts) if text is None]
        if todo:
            out = generate(self.model, self.tokenizer, [prompts[i] for i in todo],
                           num_beams=self.settings.num_beams, max_new_tokens=self.settings.max_new_tokens,
                           exact_new_tokens=self.exact_new_tokens, device=self.context.device,
                           precision=self.precision)
            counts = self.scoring_counts
            counts["generated_tokens"] += sum(out.tokens)
            counts["generated_samples"] += len(out.tokens)
            counts["generated_at_cap"] += sum(count >= self.settings.max_new_tokens for count in out.tokens)
            store.add([prompts[i] for i in todo], out.texts, out.tokens)
            for i, text in zip(todo, out.texts):
                texts[i] = text
        return [str(text) for text in texts]

    def _generation_store(self) -> Any:
        """The store of this decoding of the weights as they are now (the adapter is hashed on every call: an
        epoch validated by NDCG decodes with other weights than the test), one per key, read once."""
        from bench.train.distributed import world
        from methods.bigrec.generation_store import GenerationStore, adapter_fingerprint, store_key

        s = self.settings
        key = store_key({"backbone": self._backbone_fingerprint, "adapter": adapter_fingerprint(self.model),
                         "num_beams": s.num_beams, "max_new_tokens": s.max_new_tokens,
                         "exact_new_tokens": self.exact_new_tokens, "precision": self.precision,
                         "device": self.context.device.split(":")[0], "model": s.model})
        if key not in self._stores:
            self._stores[key] = GenerationStore(self.context.work_dir, key, rank=world()[0])
        return self._stores[key]

    def score(self, users: list[int], histories: list[list[int]]) -> np.ndarray:
        distance = self.index.distances(self._queries(histories))
        if self.gamma:
            distance = adjusted_distance(distance, self.side, self.gamma)
        return -np.asarray(distance, dtype=np.float32)

    def _decoding(self) -> str | None:
        from bench.train.beam_search import shares_prompt

        if getattr(self, "model", None) is None:
            return None
        shared = ", the prompt encoded once per request and shared by its beams" if shares_prompt(self.model) else ""
        return "Hugging Face beam search" + shared

    def _deviations(self) -> list[str]:
        s, out = self.settings, list(DEVIATIONS)
        # What this run's settings changed, not what the defaults would (a cpu_few_shot record trains on all
        # tokens, as the authors, and must not list the response-only loss).
        if s.loss == "response":
            out.append("loss on response tokens only (loss='response'); the authors trained on all tokens")
        out.extend(settings_deviations(s))
        out.append("epoch chosen by the loss of a seeded sample of validation requests (valid_loss_users; the "
                   "authors used their whole validation file)" if s.selection == "valid_loss" else
                   "epoch chosen by validation NDCG@10 of the shared evaluator (gamma = 0), not validation loss")
        if s.length_sorted_steps:
            out.append("micro-batches regrouped by length within each optimizer step (the same examples per step; "
                       "each micro-batch's token-mean loss still weighs 1/grad_accum, so a token of a short "
                       "micro-batch weighs more than in the authors' random micro-batches)")
        if self.exact_new_tokens:
            out.append(f"decoding fixed at {self.exact_new_tokens} new tokens (decode_length = {s.decode_length!r}; "
                       "published: stop at EOS)")
        return out

    def describe(self) -> dict[str, Any]:
        from bench.train.lifecycle import training_facts

        s, counts = self.settings, self.scoring_counts
        info: dict[str, Any] = {
            "backbone": getattr(self, "backbone_label", s.model),
            "model": s.model,
            "backbone_params": getattr(self, "backbone_params", None),
            "trainable_params": getattr(self, "trainable_params", None),
            "lora": {"rank": s.lora_rank, "alpha": s.lora_alpha, "dropout": s.lora_dropout,
                     "targets": list(s.lora_targets)},
            "loss": "response tokens only" if s.loss == "response" else "all tokens (as the authors)",
            "train_samples": s.train_samples,
            "embedder": s.embedder,
            "embedder_id": getattr(getattr(self, "embedder", None), "id", None),
            "distance": "cosine" if s.embedder == "minilm" else "l2",
            "grounding": "top beam only, every item scored, score = -distance",
            "num_beams": s.num_beams,
            "decoding": self._decoding(),
            "max_new_tokens": s.max_new_tokens,
            "generated_tokens_per_sample": (round(counts["generated_tokens"] / counts["generated_samples"], 3)
                                            if counts["generated_samples"] else None),
            "generated_tokens_counting": "top beam, prompt excluded, closing EOS included; evaluation only",
            "generated_samples": counts["generated_samples"],
            # Texts grounded from the work dir's store instead of decoded (reuse_generations).
            "generations_reused": counts["generations_reused"] if s.reuse_generations else None,
            # Requests whose decoding ran into max_new_tokens: their time is set by the cap, not the weights.
            "generated_at_cap_fraction": (round(counts["generated_at_cap"] / counts["generated_samples"], 4)
                                          if counts["generated_samples"] else None),
            "decode_length_fixed": (f"{self.exact_new_tokens} tokens ({s.decode_length}; speed measurement, "
                                    "not the published decoding)" if self.exact_new_tokens else None),
            "precision": self.precision,
            "setting": setting_name(self.config),
            "max_history": s.max_history,
            "max_title_words": s.max_title_words,
            "gamma": self.gamma,
            "epoch_selection": ("validation loss (as the authors)" if s.selection == "valid_loss"
                                else "validation NDCG@10"),
            "gamma_selection": ("fixed" if s.gamma != "auto" else "grid on validation NDCG@10"
                                if self.context.validate is not None else "auto without a validator: gamma 0"),
            "side_score": s.side_score if self.gamma else None,
            **(training_facts(self.progress, s.epochs, s.patience) if getattr(self, "progress", None) else {}),
            "deviations": self._deviations(),
            **self._info,
        }
        subsample = getattr(self, "_train_subsample", None)
        if subsample:
            info["train_subsample"] = subsample
        return info
