"""Amazon Reviews 2023 (McAuley Lab, Hou et al. 2024): raw `<Category>.jsonl(.gz)` reviews plus
`meta_<Category>.jsonl(.gz)`, the files new Amazon benchmarks are built from.

Items are `parent_asin` (the 2023 release groups colour/size variants under it, as its own benchmark
splits do); interactions are ordered by `timestamp` (milliseconds; ties keep file order), a repeated
(user, item) pair keeps its first review, and the k-core filter (the card's `core`, default 5; 0 = none)
runs before items are indexed. From the meta file the title is kept, and as item text the store (as
`brand`), the category path and the description, for methods that read more than titles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.data.readers import RawData, json_lines, k_core
from bench.data.user_formats import in_time_order, raw_from_sequences
from bench.errors import BenchError


def _reviews(path: Path) -> dict[str, list[tuple[float, int, str]]]:
    """{user: [(timestamp, line, parent_asin)]} of every first review of a (user, item) pair."""
    seen: set[tuple[str, str]] = set()
    events: dict[str, list[tuple[float, int, str]]] = {}
    for number, review in json_lines(path):
        try:
            user, item = str(review["user_id"]), str(review.get("parent_asin") or review["asin"])
            when = int(review["timestamp"])
        except (KeyError, TypeError, ValueError):
            raise BenchError(f"{path}:{number}: expected fields user_id, parent_asin (or asin) and an integer "
                             "timestamp (Amazon Reviews 2023)") from None
        if (user, item) not in seen:
            seen.add((user, item))
            events.setdefault(user, []).append((when, number, item))
    if not events:
        raise BenchError(f"{path}: no reviews found")
    return events


def _text(meta: dict[str, Any]) -> dict[str, Any]:
    """Title plus the 2023 meta fields kept as item text (the store is the brand)."""
    description = meta.get("description")
    if isinstance(description, list):
        description = " ".join(str(part) for part in description if part)
    return {"title": meta.get("title"), "brand": meta.get("store"), "categories": meta.get("categories"),
            "description": description}


def _meta(path: Path, wanted: set[str]) -> dict[str, dict[str, Any]]:
    text: dict[str, dict[str, Any]] = {}
    for number, meta in json_lines(path):
        item = meta.get("parent_asin") if isinstance(meta, dict) else None
        if item is None:
            raise BenchError(f"{path}:{number}: expected a parent_asin field (Amazon Reviews 2023 meta)")
        if item in wanted:
            text[item] = _text(meta)
    return text


def read_amazon2023(reviews_path: Path, meta_path: Path | None, core: int = 5) -> RawData:
    events = _reviews(reviews_path)
    if core > 0:
        rows = [(user, item, (when, line)) for user, seen in events.items() for when, line, item in seen]
        events = {}
        for user, item, (when, line) in k_core(rows, core):
            events.setdefault(user, []).append((when, line, item))
    wanted = {item for seen in events.values() for *_, item in seen}
    return raw_from_sequences(in_time_order(events, reviews_path), _meta(meta_path, wanted) if meta_path else {})
