"""Readers for the raw formats a dataset card can name. Each returns `RawData`.

Every reader fails with a BenchError naming the file, the line and what was expected.
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import zlib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import BenchError, shown
from bench.textfiles import open_text, read_text


@dataclass
class RawData:
    """Items in index order plus sequences of item indices (one form for every reader)."""

    asins: list[str]
    titles: list[str | None]
    sequences: list[list[int]] = field(default_factory=list)
    # Only for pre-split data: per-user train/valid/test parts.
    parts: tuple[list[list[int]], list[list[int]], list[list[int]]] | None = None
    # Where known: each user's own id and where it was read ("file:line"), for errors about one user.
    user_ids: list[str] | None = None
    origins: list[str] | None = None
    # Where known: item text beyond the title (description, brand, categories), per item.
    item_text: list[dict[str, Any]] | None = None


def _open_text(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, line) from a text or .gz file, turning corruption into BenchError."""
    try:
        with open_text(path) as handle:
            yield from enumerate(handle, start=1)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise BenchError(f"{path}: truncated or corrupt gzip file ({error})") from error


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) of a JSON-lines file (.gz too); blank lines skipped, a bad line named."""
    for number, line in _open_text(path):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError:
            raise BenchError(f"{path}:{number}: expected one JSON object per line") from None


def _load_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise BenchError(f"{path}:{error.lineno}: invalid JSON ({error.msg})") from error


def clean_title(raw: Any) -> str | None:
    """Amazon titles keep HTML entities (&amp;): unescape and strip them."""
    if raw is None:
        return None
    return html.unescape(str(raw)).strip() or None


def read_title_map(path: Path) -> dict[str, str | None]:
    """`{ASIN: title or null}`. An empty string is refused: null is how "no title" is written."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise BenchError(f"{path}: expected a JSON object {{ASIN: title or null}}")
    titles: dict[str, str | None] = {}
    for asin, title in data.items():
        if title is not None and not isinstance(title, str):
            raise BenchError(f"{path}: item {asin}: title must be a string or null, got {type(title).__name__}")
        if isinstance(title, str) and not title.strip():
            raise BenchError(f"{path}: item {asin}: empty title (write null for an item without a title)")
        titles[asin] = clean_title(title)
    return titles


def read_text_lines_map(path: Path) -> dict[str, str | None]:
    """`ASIN text...` per line (IDGenRec's generated textual ids)."""
    titles: dict[str, str | None] = {}
    for number, line in _open_text(path):
        if not line.strip():
            continue
        asin, _, text = line.strip().partition(" ")
        if not text.strip():
            raise BenchError(f"{path}:{number}: empty text for item {asin} (expected 'ASIN text')")
        titles[asin] = text.strip()
    return titles


def _index_by_first_appearance(user_asins: list[list[str]], titles: dict[str, str | None], path: Path) -> RawData:
    index: dict[str, int] = {}
    sequences = []
    for seq in user_asins:
        sequences.append([index.setdefault(asin, len(index)) for asin in seq])
    asins = list(index)
    return RawData(asins, [titles.get(asin) for asin in asins], sequences)


def read_asin_sequences(path: Path, titles: dict[str, str | None]) -> RawData:
    """`reviewerID ASIN ASIN ...` per line, chronological (GRAM/IDGenRec format)."""
    user_asins: list[list[str]] = []
    seen_users: set[str] = set()
    users, origins = [], []
    for number, line in _open_text(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise BenchError(f"{path}:{number}: expected 'user ASIN ASIN ...', got one field")
        if fields[0] in seen_users:
            raise BenchError(f"{path}:{number}: user {fields[0]} appears twice")
        seen_users.add(fields[0])
        user_asins.append(fields[1:])
        users.append(fields[0])
        origins.append(f"{path.name}:{number}")
    if not user_asins:
        raise BenchError(f"{path}: no sequences found")
    raw = _index_by_first_appearance(user_asins, titles, path)
    raw.user_ids, raw.origins = users, origins
    return raw


def read_int_sequences(path: Path) -> dict[int, list[int]]:
    """`user item item ...` with integer ids (P5 / DEALRec). A line may hold only the user."""
    sequences: dict[int, list[int]] = {}
    for number, line in _open_text(path):
        fields = line.split()
        if not fields:
            continue
        try:
            ids = [int(value) for value in fields]
        except ValueError:
            bad = next(value for value in fields if not value.lstrip("-").isdigit())
            raise BenchError(f"{path}:{number}: id {shown(bad)} is not an integer (expected 'user item item ...')") \
                from None
        if ids[0] in sequences:
            raise BenchError(f"{path}:{number}: user {ids[0]} appears twice")
        sequences[ids[0]] = ids[1:]
    return sequences


def read_p5(sequences_path: Path, datamaps_path: Path, titles: dict[str, str | None]) -> RawData:
    """P5 `sequential_data.txt` + `datamaps.json` (id2item maps P5 ids to ASINs)."""
    datamaps = _load_json(datamaps_path)
    id2item = datamaps.get("id2item") if isinstance(datamaps, dict) else None
    if not isinstance(id2item, dict):
        raise BenchError(f"{datamaps_path}: expected a JSON object with key 'id2item'")
    user_asins = []
    for user, items in read_int_sequences(sequences_path).items():
        try:
            user_asins.append([id2item[str(item)] for item in items])
        except KeyError as error:
            raise BenchError(f"{sequences_path}: user {user}: item id {error.args[0]} not in "
                             f"{datamaps_path.name} id2item") from None
    return _index_by_first_appearance(user_asins, titles, sequences_path)


def read_presplit(paths: dict[str, Path], item_ids_path: Path, titles: dict[str, str | None]) -> RawData:
    """DEALRec-style train/valid/test files with integer item ids 1..N (+ {id: ASIN} map)."""
    id2asin = _load_json(item_ids_path)
    if not isinstance(id2asin, dict):
        raise BenchError(f"{item_ids_path}: expected a JSON object {{item id: ASIN}}")
    try:
        ordered = sorted((int(key), value) for key, value in id2asin.items())
    except ValueError:
        raise BenchError(f"{item_ids_path}: keys must be integer item ids") from None
    position = {item_id: index for index, (item_id, _) in enumerate(ordered)}
    asins = [asin for _, asin in ordered]
    parts = {name: read_int_sequences(path) for name, path in paths.items()}
    users = sorted(set().union(*parts.values()))
    split_parts: list[list[list[int]]] = []
    for name in ("train", "valid", "test"):
        rows = []
        for user in users:
            items = parts[name].get(user, [])
            missing = [item for item in items if item not in position]
            if missing:
                raise BenchError(f"{paths[name]}: user {user}: item id {missing[0]} not in {item_ids_path.name}")
            rows.append([position[item] for item in items])
        split_parts.append(rows)
    train, valid, test = split_parts
    sequences = [t + v + s for t, v, s in zip(train, valid, test)]
    return RawData(asins, [titles.get(asin) for asin in asins], sequences, (train, valid, test))


def _parse_meta_line(line: str, path: Path, number: int) -> dict[str, Any]:
    """2014 meta files are Python dict literals, not JSON; accept both."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        pass
    try:
        value = ast.literal_eval(line)
    except (ValueError, SyntaxError):
        raise BenchError(f"{path}:{number}: expected one JSON object or Python dict per line") from None
    if not isinstance(value, dict):
        raise BenchError(f"{path}:{number}: expected an object per line")
    return value


def k_core(interactions: list[tuple[str, str, Any]], k: int) -> list[tuple[str, str, Any]]:
    """Iteratively keep users and items with at least k interactions."""
    while True:
        user_count: dict[str, int] = defaultdict(int)
        item_count: dict[str, int] = defaultdict(int)
        for user, item, _ in interactions:
            user_count[user] += 1
            item_count[item] += 1
        kept = [row for row in interactions if user_count[row[0]] >= k and item_count[row[1]] >= k]
        if len(kept) == len(interactions):
            return kept
        interactions = kept


def read_amazon_raw(reviews_path: Path, meta_path: Path, core: int = 5) -> RawData:
    """McAuley 2014 `reviews_<Cat>_5.json.gz` + `meta_<Cat>.json.gz`.

    Sorted by review time (ties keep file order), repeated (user, item) pairs keep the
    first, then `core`-core filtered.
    """
    interactions: list[tuple[str, str, int]] = []
    seen: set[tuple[str, str]] = set()
    for number, review in json_lines(reviews_path):
        try:
            key = (str(review["reviewerID"]), str(review["asin"]))
            when = int(review["unixReviewTime"])
        except (KeyError, TypeError, ValueError):
            raise BenchError(f"{reviews_path}:{number}: expected fields reviewerID, asin and integer "
                             "unixReviewTime") from None
        if key not in seen:
            seen.add(key)
            interactions.append((key[0], key[1], when))
    interactions = k_core(interactions, core)
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for order, (user, item, when) in enumerate(interactions):
        by_user[user].append((when, order, item))
    user_asins = [[item for _, _, item in sorted(rows)] for rows in by_user.values()]
    wanted = {item for _, item, _ in interactions}
    titles: dict[str, str | None] = {}
    text: dict[str, dict[str, Any]] = {}
    for number, line in _open_text(meta_path):
        if not line.strip():
            continue
        meta = _parse_meta_line(line, meta_path, number)
        asin = meta.get("asin")
        if asin in wanted:
            titles[asin] = clean_title(meta.get("title"))
            text[asin] = {key: meta[key] for key in ("brand", "categories", "description") if meta.get(key)}
    raw = _index_by_first_appearance(user_asins, titles, reviews_path)
    raw.item_text = [text.get(asin, {}) for asin in raw.asins]
    return raw
