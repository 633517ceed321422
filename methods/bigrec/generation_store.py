"""BIGRec's generated texts, kept in the run's work dir so that grounding the same weights again does not
decode again.

Why: on a 2-core CPU BIGRec decodes a 2,000-request test subsample in hours and grounds it in seconds, and its
variants (the authors' popularity gamma, another side score) change only the grounding. `bench evaluate`
copies the work dir, so a variant scored with `bigrec.reuse_generations = true` grounds the texts the plain
run generated. The file's name carries everything that shapes a generation (backbone and adapter weights,
beams, lengths, precision, device kind), so a retrained adapter or another decoding never reads it. Every
process appends its own file (torchrun ranks decode different requests); a line cut by a kill is skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

SUFFIX = ".jsonl"  # bench.runs.eval_progress leaves JSON Lines out of a work dir's weight files


def adapter_fingerprint(model: Any) -> str:
    """Hash of every trainable (LoRA) tensor: a few hundred thousand numbers, hashed in milliseconds."""
    digest = hashlib.sha256()
    for name, param in sorted(model.named_parameters()):
        if "lora_" in name:
            digest.update(name.encode())
            digest.update(param.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


# Bumped when bench.train.beam_search or the way BIGRec decodes changes what a decoding writes.
DECODER_VERSION = 1


def store_key(parts: dict[str, Any]) -> str:
    """The decoding's identity: the caller's parts, the decoder's version and the libraries that decode."""
    import torch
    import transformers

    every = {**parts, "decoder": DECODER_VERSION, "torch": torch.__version__, "transformers": transformers.__version__}
    return hashlib.sha256(json.dumps(every, sort_keys=True, default=str).encode()).hexdigest()[:16]


def prompt_key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:32]


class GenerationStore:
    """prompt -> (generated text, generated tokens) for one decoding of one set of weights."""

    def __init__(self, work_dir: Path, key: str, rank: int = 0) -> None:
        self.work_dir, self.key = Path(work_dir), key
        self.path = self.work_dir / f"generations-{key}-r{rank}{SUFFIX}"
        self._known: dict[str, tuple[str, int]] | None = None

    def _read(self) -> dict[str, tuple[str, int]]:
        known: dict[str, tuple[str, int]] = {}
        for path in sorted(self.work_dir.glob(f"generations-{self.key}-r*{SUFFIX}")):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue  # unreadable: those prompts are decoded again
            for line in lines:
                try:
                    entry = json.loads(line)
                    known[str(entry["prompt"])] = (str(entry["text"]), int(entry["tokens"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short when the process was killed
        return known

    def get(self, prompt: str) -> tuple[str, int] | None:
        if self._known is None:
            self._known = self._read()
        return self._known.get(prompt_key(prompt))

    def add(self, prompts: list[str], texts: list[str], tokens: list[int]) -> None:
        """Appends one batch in one write (complete lines only), so a kill loses at most that batch."""
        lines = [json.dumps({"prompt": prompt_key(p), "text": t, "tokens": int(n)}) + "\n"
                 for p, t, n in zip(prompts, texts, tokens)]
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(lines))
        if self._known is not None:
            self._known.update({prompt_key(p): (t, int(n)) for p, t, n in zip(prompts, texts, tokens)})
