"""Readers for the formats researchers already have (a dataset card's `format`):

- `lcrec_json`: LC-Rec / LETTER / CollisionGenRec: `<name>.inter.json` ({"user": [item, ...]} in time
  order) + `<name>.item.json` ({"item": {"title", "description", "brand", "categories"}});
- `recbole_atomic`: RecBole's `<name>.inter` (tab-separated, typed header `user_id:token
  item_id:token timestamp:float`) + optional `<name>.item` (item_id:token plus text fields);
- `interactions_csv`: a plain `user,item,timestamp` CSV (or parquet) + optional `item,title` file.

Every reader keeps each user's id and the place it was read from, so a problem with one user is
reported by file, line and user id; the extra item text (brand, categories, description) is kept
beside the title for methods that use richer text.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from bench.data.readers import RawData, clean_title
from bench.errors import BenchError, shown
from bench.textfiles import open_text, read_text

TEXT_FIELDS = ("description", "brand", "categories")


def _load_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as error:
        raise BenchError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None


def raw_from_sequences(user_items: list[tuple[str, list[str], str]], item_text: dict[str, dict[str, Any]]) -> RawData:
    """(user id, item ids in time order, origin) -> RawData with items indexed by first appearance."""
    index: dict[str, int] = {}
    sequences = [[index.setdefault(item, len(index)) for item in items] for _, items, _ in user_items]
    items = list(index)
    text = [item_text.get(item, {}) for item in items]
    return RawData(items, [clean_title(t.get("title")) for t in text], sequences,
                   user_ids=[user for user, _, _ in user_items], origins=[origin for *_, origin in user_items],
                   item_text=[{k: t[k] for k in TEXT_FIELDS if t.get(k)} for t in text])


def read_lcrec_json(inter_path: Path, item_path: Path | None) -> RawData:
    inter = _load_json(inter_path)
    if not isinstance(inter, dict):
        raise BenchError(f"{inter_path}: expected a JSON object {{user: [item, ...]}}")
    user_items = []
    for user, items in inter.items():
        if not isinstance(items, list):
            raise BenchError(f"{inter_path}: user {user}: expected a list of item ids, got {type(items).__name__}")
        user_items.append((str(user), [str(i) for i in items], f"{inter_path.name} user {user}"))
    text: dict[str, dict[str, Any]] = {}
    if item_path is not None:
        raw = _load_json(item_path)
        if not isinstance(raw, dict):
            raise BenchError(f"{item_path}: expected a JSON object {{item: {{title, ...}}}}")
        text = {str(k): (v if isinstance(v, dict) else {"title": v}) for k, v in raw.items()}
    return raw_from_sequences(user_items, text)


def in_time_order(events: dict[str, list[tuple[float, int, str]]], path: Path) -> list[tuple[str, list[str], str]]:
    """{user: [(timestamp, line, item)]} -> (user, items by time (file order on ties), "file:first line")."""
    return [(user, [item for *_, item in sorted(rows)], f"{path.name}:{min(line for _, line, _ in rows)}")
            for user, rows in events.items()]


def _typed_header(path: Path, header: list[str], wanted: dict[str, str]) -> dict[str, int]:
    """RecBole's `name:type` header -> {our field: column}; a missing field names the file and header."""
    names = [column.split(":", 1)[0] for column in header]
    found = {}
    for field_, name in wanted.items():
        if name not in names:
            raise BenchError(f"{path}:1: header {header} lacks {name!r} (RecBole atomic files: "
                             f"'user_id:token<TAB>item_id:token<TAB>timestamp:float')")
        found[field_] = names.index(name)
    return found


def read_recbole_atomic(inter_path: Path, item_path: Path | None) -> RawData:
    """Interactions sorted by timestamp per user (stable for equal times, file order kept)."""
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    with open_text(inter_path) as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = next(rows, None) or []
        columns = _typed_header(inter_path, header, {"user": "user_id", "item": "item_id"})
        time_column = [c.split(":", 1)[0] for c in header].index("timestamp") if any(
            c.startswith("timestamp:") for c in header) else None
        for number, row in enumerate(rows, start=2):
            if not row:
                continue
            try:
                user, item = row[columns["user"]], row[columns["item"]]
                stamp = float(row[time_column]) if time_column is not None else float(number)
            except (IndexError, ValueError):
                raise BenchError(f"{inter_path}:{number}: expected user, item and a numeric timestamp, got "
                                 f"{row}") from None
            by_user.setdefault(user, []).append((stamp, number, item))
    text: dict[str, dict[str, Any]] = {}
    if item_path is not None and item_path.exists():
        with open_text(item_path) as handle:
            rows = csv.reader(handle, delimiter="\t")
            header = next(rows, None) or []
            names = [c.split(":", 1)[0] for c in header]
            key = _typed_header(item_path, header, {"item": "item_id"})["item"]
            for row in rows:
                if row:
                    text[row[key]] = {name: value for name, value in zip(names, row) if name != "item_id"}
                    if "title" not in text[row[key]] and "movie_title" in text[row[key]]:
                        text[row[key]]["title"] = text[row[key]]["movie_title"]
    return raw_from_sequences(in_time_order(by_user, inter_path), text)


def _table(path: Path) -> list[dict[str, str]]:
    if path.suffix == ".parquet":
        import pandas as pd

        return [{k: str(v) for k, v in row.items()} for row in pd.read_parquet(path).to_dict("records")]
    with open_text(path, newline="") as handle:
        return list(csv.DictReader(handle))


def read_interactions_csv(inter_path: Path, item_path: Path | None) -> RawData:
    rows = _table(inter_path)
    if rows and not {"user", "item"} <= set(rows[0]):
        raise BenchError(f"{inter_path}:1: expected columns user,item[,timestamp], got {sorted(rows[0])}")
    by_user: dict[str, list[tuple[float, int, str]]] = {}
    for number, row in enumerate(rows, start=2):
        try:
            stamp = float(row["timestamp"]) if row.get("timestamp") not in (None, "") else float(number)
        except ValueError:
            raise BenchError(f"{inter_path}:{number}: timestamp {shown(row['timestamp'])} is not a number") from None
        by_user.setdefault(row["user"], []).append((stamp, number, row["item"]))
    text = {}
    if item_path is not None:
        for row in _table(item_path):
            if "item" not in row:
                raise BenchError(f"{item_path}:1: expected columns item,title[,...], got {sorted(row)}")
            text[row["item"]] = row
    return raw_from_sequences(in_time_order(by_user, inter_path), text)
