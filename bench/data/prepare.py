"""Turn a dataset card into the prepared form (parquet cache keyed by content hash)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench.data.cards import DatasetCard, Source, load_card, pick_source
from bench.data.readers import (
    RawData,
    read_amazon_raw,
    read_asin_sequences,
    read_p5,
    read_presplit,
    read_text_lines_map,
    read_title_map,
)
from bench.data.split import GLOBAL_TIME, global_time, leave_one_out
from bench.data.types import Catalogue, Dataset
from bench.errors import BenchError

# Bump when a reader's output changes, so old caches are not reused.
PREPARE_VERSION = "1"


def _read_source(source: Source) -> RawData:
    paths = source.paths
    if source.format == "amazon_raw":
        return read_amazon_raw(paths["reviews"], paths["meta"], core=int(source.options.get("core", 5)))
    if source.options.get("titles_format") == "asin_text_lines":
        titles = read_text_lines_map(paths["titles"])
    else:
        titles = read_title_map(paths["titles"])
    if source.format == "asin_sequences":
        return read_asin_sequences(paths["sequences"], titles)
    if source.format == "p5":
        return read_p5(paths["sequences"], paths["datamaps"], titles)
    if source.format == "presplit_sequences":
        parts = {name: paths[name] for name in ("train", "valid", "test")}
        return read_presplit(parts, paths["item_ids"], titles)
    raise BenchError(f"unsupported source format {source.format!r}")


def source_hash(card: DatasetCard, source: Source) -> str:
    """Hash of the card, the reader version and every source file's bytes."""
    digest = hashlib.sha256(PREPARE_VERSION.encode())
    digest.update(card.card_path.read_bytes())
    for key in sorted(source.paths):
        digest.update(key.encode())
        with open(source.paths[key], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _write_cache(folder: Path, raw: RawData, info: dict[str, Any]) -> None:
    import pandas as pd

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        pd.DataFrame({"item": range(len(raw.asins)), "asin": raw.asins, "title": raw.titles}).to_parquet(
            tmp / "items.parquet", index=False)
        columns: dict[str, Any] = {"user": range(len(raw.sequences)), "sequence": raw.sequences}
        if raw.parts is not None:
            columns.update(train=raw.parts[0], valid=raw.parts[1], test=raw.parts[2])
        pd.DataFrame(columns).to_parquet(tmp / "sequences.parquet", index=False)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _read_cache(folder: Path) -> RawData:
    import pandas as pd

    items = pd.read_parquet(folder / "items.parquet")
    seqs = pd.read_parquet(folder / "sequences.parquet")
    titles = [None if t is None or (isinstance(t, float)) else str(t) for t in items["title"].tolist()]

    def as_lists(column: str) -> list[list[int]]:
        return [[int(x) for x in row] for row in seqs[column].tolist()]

    parts = (as_lists("train"), as_lists("valid"), as_lists("test")) if "train" in seqs else None
    return RawData(items["asin"].tolist(), titles, as_lists("sequence"), parts)


def prepare(name: str, data_dir: Path, cache_dir: Path, *, force: bool = False) -> tuple[Dataset, dict[str, Any]]:
    """Load (from cache when the sources are unchanged) and split one dataset."""
    card = load_card(name, data_dir)
    source = pick_source(card, data_dir)
    key = source_hash(card, source)
    folder = cache_dir / "datasets" / f"{card.name}-{key}"
    if folder.exists() and not force:
        raw = _read_cache(folder)
        info = json.loads((folder / "info.json").read_text())
    else:
        raw = _read_source(source)
        info = {"dataset": card.name, "source_format": source.format,
                "origin": source.options.get("origin", ""), "content_hash": key,
                "files": {k: str(p) for k, p in source.paths.items()}}
        _write_cache(folder, raw, info)
    if card.split == GLOBAL_TIME:
        if raw.parts is None:
            raise BenchError(f"{card.card_path}: split 'global_time' needs a pre-split source (presplit_sequences)")
        split = global_time(*raw.parts)
    else:
        split = leave_one_out(raw.sequences)
    title_kind = source.options.get("title_kind", card.title_kind)
    dataset = Dataset(card.name, Catalogue(raw.asins, raw.titles), split, title_kind)
    info = {**info, **statistics(dataset, raw), "cache": str(folder)}
    return dataset, info


def statistics(dataset: Dataset, raw: RawData) -> dict[str, Any]:
    """Counts a dataset card pins, plus title coverage (what LLM methods can read)."""
    lengths = [len(seq) for seq in raw.sequences]
    titled = [title is not None for title in dataset.catalogue.titles]
    interactions = sum(lengths)
    titled_interactions = sum(titled[item] for seq in raw.sequences for item in seq)
    return {
        "users": len(raw.sequences),
        "items": len(raw.asins),
        "interactions": interactions,
        "avg_length": round(interactions / max(len(lengths), 1), 3),
        "max_length": max(lengths, default=0),
        "title_kind": dataset.title_kind,
        "items_with_title": sum(titled),
        "title_coverage_items": round(sum(titled) / max(len(titled), 1), 4),
        "title_coverage_interactions": round(titled_interactions / max(interactions, 1), 4),
        "split": dataset.split.protocol,
        "split_hash": dataset.split.hash,
        "valid_requests": len(dataset.split.valid),
        "test_requests": len(dataset.split.test),
    }


def download(name: str, data_dir: Path, timeout: float = 30.0) -> list[Path]:
    """Fetch the raw files a card lists into the data dir (needs a network)."""
    card = load_card(name, data_dir)
    raw_source = next((s for s in card.sources if s.format == "amazon_raw"), None)
    if raw_source is None or not card.download:
        hint = card.download.get("repository", "see the dataset card")
        raise BenchError(f"dataset {name!r} has no raw download; get its files from {hint}")
    written = []
    for key, url in card.download.items():
        target = raw_source.paths[key]
        if target.exists():
            written.append(target)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as handle:
                shutil.copyfileobj(response, handle)
        except OSError as error:
            tmp.unlink(missing_ok=True)
            raise BenchError(f"download of {url} failed ({error}); with no network, place the file at "
                             f"{target} yourself") from error
        os.replace(tmp, target)
        written.append(target)
    return written
