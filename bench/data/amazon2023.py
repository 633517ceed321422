"""Amazon Reviews 2023 (McAuley Lab, Hou et al. 2024): raw `<Category>.jsonl(.gz)` reviews plus
`meta_<Category>.jsonl(.gz)`, the files new Amazon benchmarks are built from.

Items are `parent_asin` (the 2023 release groups colour/size variants under it, as its own benchmark
splits do); interactions are ordered by `timestamp` (milliseconds; ties keep file order), a repeated
(user, item) pair keeps its first review, and the k-core filter (the card's `core`, default 5; 0 = none)
runs before items are indexed. From the meta file the title is kept, and as item text the store (as
`brand`), the category path and the description, for methods that read more than titles.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.data.readers import RawData, clean_title, json_lines, k_core
from bench.errors import BenchError


def _reviews(path: Path) -> list[tuple[str, str, int, int]]:
    """(user, parent_asin, timestamp, line) of every first review of a pair, in file order."""
    seen: set[tuple[str, str]] = set()
    rows = []
    for number, review in json_lines(path):
        try:
            user, item = str(review["user_id"]), str(review.get("parent_asin") or review["asin"])
            when = int(review["timestamp"])
        except (KeyError, TypeError, ValueError):
            raise BenchError(f"{path}:{number}: expected fields user_id, parent_asin (or asin) and an integer "
                             "timestamp (Amazon Reviews 2023)") from None
        if (user, item) not in seen:
            seen.add((user, item))
            rows.append((user, item, when, number))
    if not rows:
        raise BenchError(f"{path}: no reviews found")
    return rows


def _text(meta: dict[str, Any]) -> dict[str, Any]:
    description = meta.get("description")
    if isinstance(description, list):
        description = " ".join(str(part) for part in description if part)
    categories = meta.get("categories")
    text = {"brand": meta.get("store"), "categories": categories if categories else None,
            "description": description or None}
    return {key: value for key, value in text.items() if value}


def _meta(path: Path, wanted: set[str]) -> tuple[dict[str, str | None], dict[str, dict[str, Any]]]:
    titles: dict[str, str | None] = {}
    text: dict[str, dict[str, Any]] = {}
    for number, meta in json_lines(path):
        item = meta.get("parent_asin") if isinstance(meta, dict) else None
        if item is None:
            raise BenchError(f"{path}:{number}: expected a parent_asin field (Amazon Reviews 2023 meta)")
        if item in wanted:
            titles[item] = clean_title(meta.get("title"))
            text[item] = _text(meta)
    return titles, text


def read_amazon2023(reviews_path: Path, meta_path: Path | None, core: int = 5) -> RawData:
    rows = _reviews(reviews_path)
    first_line = {(user, item): number for user, item, _, number in rows}
    kept = k_core([(user, item, when) for user, item, when, _ in rows], core) if core > 0 else \
        [(user, item, when) for user, item, when, _ in rows]
    by_user: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for user, item, when in kept:
        by_user[user].append((when, first_line[(user, item)], item))
    index: dict[str, int] = {}
    sequences, users, origins = [], [], []
    for user, events in by_user.items():
        events.sort()
        sequences.append([index.setdefault(item, len(index)) for _, _, item in events])
        users.append(user)
        origins.append(f"{reviews_path.name}:{events[0][1]}")
    items = list(index)
    titles, text = _meta(meta_path, set(items)) if meta_path is not None else ({}, {})
    return RawData(items, [titles.get(item) for item in items], sequences, user_ids=users, origins=origins,
                   item_text=[text.get(item, {}) for item in items])
