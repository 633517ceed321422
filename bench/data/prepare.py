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

from bench.data.amazon2023 import read_amazon2023
from bench.data.cards import DatasetCard, Source, check_name, load_card, pick_source
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
from bench.data.user_formats import read_interactions_csv, read_lcrec_json, read_recbole_atomic
from bench.errors import BenchError

# Bump when a reader's output changes, so old caches are not reused (2: item text beyond titles cached).
PREPARE_VERSION = "2"
USER_FORMATS = {"lcrec_json": read_lcrec_json, "recbole_atomic": read_recbole_atomic,
                "interactions_csv": read_interactions_csv, "amazon2023": read_amazon2023}
DEFAULT_CORE = 5  # amazon_raw and amazon2023: the k-core filter the Amazon benchmarks use
# Card options a user-format reader takes, with their defaults (written into cards by `bench data init`).
READER_OPTIONS: dict[str, dict[str, Any]] = {"amazon2023": {"core": DEFAULT_CORE}}


def reader_options(fmt: str, given: dict[str, Any]) -> dict[str, Any]:
    """The reader's options: the card's (or the command line's) values over the defaults."""
    return {key: type(default)(given.get(key, default)) for key, default in READER_OPTIONS.get(fmt, {}).items()}


def _read_source(source: Source) -> RawData:
    paths = source.paths
    if source.format in USER_FORMATS:
        items = paths.get("items")
        items = items if items is not None and items.exists() else None
        return USER_FORMATS[source.format](paths["inter"], items, **reader_options(source.format, source.options))
    if source.format == "amazon_raw":
        return read_amazon_raw(paths["reviews"], paths["meta"], core=int(source.options.get("core", DEFAULT_CORE)))
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


MIN_ITEMS = {"leave_one_out": 3}  # train >= 1, valid, test


def check_lengths(raw: RawData, card: DatasetCard, source: Source) -> int:
    """Every user has the protocol's minimum number of items, or the card drops short users
    (`drop_short_users = true`, counted); otherwise one error naming where the first short user was read.
    Data with no users at all (or none left) is refused: nothing could be split or ranked."""
    data_file = next((source.paths[key] for key in ("inter", "sequences", "reviews", "train")
                      if key in source.paths), card.card_path).resolve()
    if not raw.sequences:  # a card of 0 users would be written, then every command on it would fail
        raise BenchError(f"{data_file}: no interactions found (0 users); expected at least one user with "
                         f"interactions ({source.format})")
    need = MIN_ITEMS.get(card.split)
    if need is None or raw.parts is not None:
        return 0
    short = [u for u, seq in enumerate(raw.sequences) if len(seq) < need]
    if not short:
        return 0
    if not (source.options.get("drop_short_users") or card.drop_short_users):
        user = short[0]
        where = raw.origins[user] if raw.origins else f"user index {user}"
        name = f"user {raw.user_ids[user]}" if raw.user_ids else f"user index {user}"
        raise BenchError(f"{where}: {name} has {len(raw.sequences[user])} item(s); {card.split} needs at least "
                         f"{need} ({len(short)} such users). Filter them, or set drop_short_users = true in "
                         f"{card.card_path.name} to drop and count them")
    if len(short) == len(raw.sequences):
        raise BenchError(f"{data_file}: every user ({len(short)}) has fewer than {need} items, which {card.split} "
                         "needs; dropping them would leave no users")
    keep = [u for u, seq in enumerate(raw.sequences) if len(seq) >= need]
    used = sorted({item for u in keep for item in raw.sequences[u]})
    new_index = {old: new for new, old in enumerate(used)}
    raw.sequences = [[new_index[i] for i in raw.sequences[u]] for u in keep]
    raw.asins, raw.titles = [raw.asins[i] for i in used], [raw.titles[i] for i in used]
    if raw.user_ids:
        raw.user_ids = [raw.user_ids[u] for u in keep]
    if raw.origins:
        raw.origins = [raw.origins[u] for u in keep]
    if raw.item_text:
        raw.item_text = [raw.item_text[i] for i in used]
    return len(short)


def source_hash(card: DatasetCard, source: Source) -> str:
    """Hash of the card, the reader version and every source file's bytes."""
    digest = hashlib.sha256(PREPARE_VERSION.encode())
    digest.update(card.card_path.read_bytes())
    for key in sorted(source.paths):
        if not source.paths[key].exists():  # an optional file (e.g. items) left out
            continue
        digest.update(key.encode())
        with open(source.paths[key], "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _write_cache(folder: Path, raw: RawData, info: dict[str, Any], *, replace: bool) -> None:
    import pandas as pd

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        items: dict[str, Any] = {"item": range(len(raw.asins)), "asin": raw.asins, "title": raw.titles}
        if raw.item_text is not None:  # JSON per item: fields differ between items and formats
            items["text"] = [json.dumps(text, sort_keys=True) for text in raw.item_text]
        pd.DataFrame(items).to_parquet(tmp / "items.parquet", index=False)
        columns: dict[str, Any] = {"user": range(len(raw.sequences)), "sequence": raw.sequences}
        if raw.parts is not None:
            columns.update(train=raw.parts[0], valid=raw.parts[1], test=raw.parts[2])
        pd.DataFrame(columns).to_parquet(tmp / "sequences.parquet", index=False)
        (tmp / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        _publish(tmp, folder, replace=replace)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, folder: Path, *, replace: bool) -> None:
    """Rename the written `tmp` into place. Several processes may prepare the same cache at once (every
    torchrun rank does), and the folder is named by the sources' content, so whichever copy lands first is
    kept: a folder another process published is never deleted under its readers, and ours is dropped.
    `replace` (--force) first moves the old folder aside (into a fresh empty folder, which rename may
    replace), so the rename never meets a half-deleted one, and puts it back if ours cannot take its place."""
    aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old-"))
    try:
        if replace:
            try:
                folder.rename(aside)
            except FileNotFoundError:
                pass
        try:
            tmp.rename(folder)
        except OSError:  # another process published first (ENOTEMPTY/EEXIST), else a real failure
            if replace and not folder.exists() and (aside / "info.json").exists():
                aside.rename(folder)  # the old copy back in place; the failure is still ours to report
                raise
            if not (folder / "info.json").exists():
                raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def _read_cache(folder: Path) -> RawData:
    import pandas as pd

    items = pd.read_parquet(folder / "items.parquet")
    seqs = pd.read_parquet(folder / "sequences.parquet")
    titles = [None if t is None or (isinstance(t, float)) else str(t) for t in items["title"].tolist()]

    def as_lists(column: str) -> list[list[int]]:
        return [[int(x) for x in row] for row in seqs[column].tolist()]

    parts = (as_lists("train"), as_lists("valid"), as_lists("test")) if "train" in seqs else None
    text = [json.loads(t) for t in items["text"].tolist()] if "text" in items else None
    return RawData(items["asin"].tolist(), titles, as_lists("sequence"), parts, item_text=text)


def prepare(name: str, data_dir: Path, cache_dir: Path, *, force: bool = False,
            card: DatasetCard | None = None) -> tuple[Dataset, dict[str, Any]]:
    """Load (from cache when the sources are unchanged) and split one dataset (`card`: the one the caller
    already read, so a run reads its card once)."""
    card = card or load_card(name, data_dir)
    source = pick_source(card, data_dir)
    key = source_hash(card, source)
    folder = cache_dir / "datasets" / f"{card.name}-{key}"
    if folder.exists() and not force:
        raw = _read_cache(folder)
        info = json.loads((folder / "info.json").read_text())
    else:
        raw = _read_source(source)
        dropped = check_lengths(raw, card, source)  # before anything is written
        info = {"dataset": card.name, "source_format": source.format,
                "origin": source.options.get("origin", ""), "content_hash": key,
                "files": {k: str(p) for k, p in source.paths.items()}, "short_users_dropped": dropped}
        _write_cache(folder, raw, info, replace=force)
    if card.split == GLOBAL_TIME:
        if raw.parts is None:
            raise BenchError(f"{card.card_path}: split 'global_time' needs a pre-split source (presplit_sequences)")
        split = global_time(*raw.parts)
    else:
        split = leave_one_out(raw.sequences)
    title_kind = source.options.get("title_kind", card.title_kind)
    dataset = Dataset(card.name, Catalogue(raw.asins, raw.titles, item_text(raw, card)), split, title_kind)
    info = {**info, **statistics(dataset, raw), "cache": str(folder)}
    return dataset, info


def item_text(raw: RawData, card: DatasetCard) -> list[dict[str, Any]] | None:
    """The item text methods may read: the fields the card's `text_fields` lists (all the reader kept
    when it lists none)."""
    if raw.item_text is None:
        return None
    if card.text_fields is None:
        return raw.item_text
    return [{key: text[key] for key in card.text_fields if key in text} for text in raw.item_text]


def count_mismatches(card: DatasetCard, info: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The card's `expected` counts that the prepared data does not have: {key: (expected, got)}."""
    return {key: (value, info.get(key)) for key, value in card.expected.items() if info.get(key) != value}


def card_facts(card: DatasetCard) -> dict[str, Any]:
    """Which card a run read and whether git tracks it (an untracked card is not in the revision)."""
    import subprocess

    path = card.card_path
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent,
                                 capture_output=True).returncode == 0
    except OSError:
        tracked = False
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16],
            "tracked_by_git": tracked}


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
        # Share of items with each text field beyond the title (none: the source has titles only).
        "item_text_coverage": text_coverage(dataset.catalogue.text),
        "split": dataset.split.protocol,
        "split_hash": dataset.split.hash,
        "valid_requests": len(dataset.split.valid),
        "test_requests": len(dataset.split.test),
    }


def text_coverage(text: list[dict[str, Any]] | None) -> dict[str, float]:
    if not text:
        return {}
    fields = sorted({key for item in text for key in item})
    return {key: round(sum(1 for item in text if item.get(key)) / len(text), 4) for key in fields}


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


def write_card(name: str, fmt: str, inter: Path, items: Path | None, out_dir: Path,
               split: str = "leave_one_out", drop_short_users: bool = False,
               core: int | None = None) -> tuple[Path, dict[str, int]]:
    """`bench data init`: read the files once, measure the counts, and write `<out_dir>/<name>.toml` with
    paths relative to it, so nobody writes a card's TOML from scratch. Returns (card, counts)."""
    check_name(name, "bench data init")  # before anything is written: the name is the card's file name
    if fmt not in USER_FORMATS:
        raise BenchError(f"--format {fmt!r}: expected one of {', '.join(USER_FORMATS)}")
    for path in (inter, items):
        if path is not None and not path.exists():
            raise BenchError(f"{path} does not exist")
    if core is not None and ("core" not in READER_OPTIONS.get(fmt, {}) or core < 0):
        takes = ", ".join(f for f, options in READER_OPTIONS.items() if "core" in options)
        raise BenchError(f"--core {core}: only for --format {takes}, and at least 0 (0 = no k-core filter)")
    card_path = out_dir / f"{name}.toml"
    if card_path.exists():
        raise BenchError(f"{card_path} exists; remove it first or choose another name")
    options = reader_options(fmt, {} if core is None else {"core": core})
    raw = USER_FORMATS[fmt](inter, items, **options)  # a file that cannot be read leaves nothing behind
    made_dir = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    fields = sorted({key for text in raw.item_text or [] for key in text})

    def relative(path: Path) -> str:
        return os.path.relpath(path.resolve(), out_dir.resolve())

    lines = [f"# Written by `bench data init` from {inter.name}; counts measured then.", f'name = "{name}"',
             f'description = "{name}: {fmt} files"', f'split = "{split}"', 'title_kind = "title"',
             f"drop_short_users = {'true' if drop_short_users else 'false'}", "", "[[sources]]", f'format = "{fmt}"',
             f'inter = "{relative(inter)}"'] + ([f'items = "{relative(items)}"'] if items is not None else [])
    lines += [f"{key} = {value}" for key, value in options.items()]
    if fields:  # item text beyond titles that methods may read; trim the list to hide a field from them
        lines.insert(6, "text_fields = [" + ", ".join(f'"{f}"' for f in fields) + "]")
    card_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        card = load_card(str(card_path), out_dir)
        dropped = check_lengths(raw, card, card.sources[0])
    except BenchError:
        card_path.unlink()
        if made_dir:
            out_dir.rmdir()
        raise
    counts = {"users": len(raw.sequences), "items": len(raw.asins),
              "interactions": sum(len(seq) for seq in raw.sequences)}
    lines += ["", "[expected]", *(f"{key} = {value}" for key, value in counts.items())]
    card_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return card_path, {**counts, "short_users_dropped": dropped}
