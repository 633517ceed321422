"""Dataset cards (`datasets/<name>.toml`): sources, split protocol, expected counts."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import REPO_ROOT
from bench.errors import BenchError, did_you_mean, shown
from bench.textfiles import read_text

CARDS_DIR = REPO_ROOT / "datasets"
# A dataset's name is a folder under results/runs/ and the cache: one plain path component, never "..", "/",
# an absolute path, an empty string or shell syntax.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}")
PATH_KEYS = ("sequences", "titles", "datamaps", "reviews", "meta", "train", "valid", "test", "item_ids", "inter",
             "items")
REQUIRED_BY_FORMAT = {
    "asin_sequences": ("sequences", "titles"),
    "p5": ("sequences", "datamaps", "titles"),
    "amazon_raw": ("reviews", "meta"),
    "presplit_sequences": ("train", "valid", "test", "item_ids", "titles"),
    # The formats researchers bring (bench/data/user_formats.py); `items` is optional for each.
    "lcrec_json": ("inter",),
    "recbole_atomic": ("inter",),
    "interactions_csv": ("inter",),
    "amazon2023": ("inter",),  # inter = <Category>.jsonl(.gz) reviews, items = meta_<Category>.jsonl(.gz)
}


@dataclass(frozen=True)
class Source:
    format: str
    paths: dict[str, Path]
    options: dict[str, Any]

    def available(self) -> bool:
        return all(path.exists() for key, path in self.paths.items() if key != "items")

    def missing(self) -> list[Path]:
        return [path for path in self.paths.values() if not path.exists()]


@dataclass(frozen=True)
class DatasetCard:
    name: str
    description: str
    split: str
    title_kind: str
    sources: list[Source]
    expected: dict[str, int] = field(default_factory=dict)
    download: dict[str, str] = field(default_factory=dict)
    card_path: Path = CARDS_DIR
    drop_short_users: bool = False
    # Item text fields beyond the title that methods may read (None: whatever the reader kept).
    text_fields: tuple[str, ...] | None = None


def check_name(name: object, where: str) -> str:
    """The name, if it is safe as one folder name; else one BenchError (before anything is written)."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):  # a path given as a name is shown whole
        raise BenchError(f"{where}: dataset name {shown(name, 200)} is not allowed: use 1-100 letters, digits, '_', "
                         "'-' and '.' (not first); the name becomes a folder under results/ and the cache")
    return name


def search_path(cards_dir: Path = CARDS_DIR) -> list[Path]:
    """Folders searched for `<name>.toml`: BENCH_DATASETS_DIR (os.pathsep-separated) first, then ours."""
    extra = [Path(p) for p in os.environ.get("BENCH_DATASETS_DIR", "").split(os.pathsep) if p]
    return [*extra, cards_dir]


def card_names(cards_dir: Path = CARDS_DIR) -> list[str]:
    return sorted({path.stem for folder in search_path(cards_dir) for path in folder.glob("*.toml")})


def find_card(name: str, cards_dir: Path = CARDS_DIR) -> Path:
    """A card by name on the search path, or a card file given by path (`--dataset my/card.toml`)."""
    if name.endswith(".toml"):
        path = Path(name)
        if not path.exists():
            raise BenchError(f"dataset card {name} does not exist")
        return path.resolve()
    for folder in search_path(cards_dir):
        if (folder / f"{name}.toml").exists():
            return folder / f"{name}.toml"
    names = card_names(cards_dir)
    raise BenchError(f"Unknown dataset {shown(name)}.{did_you_mean(name, names)} Available: {', '.join(names)} "
                     "(or give a card file: --dataset path/to/card.toml; more folders: BENCH_DATASETS_DIR)")


def load_card(name: str, data_dir: Path, cards_dir: Path = CARDS_DIR) -> DatasetCard:
    path = find_card(name, cards_dir)
    # Our cards read from the data dir; a card of one's own reads relative to its own folder.
    own_data = path.parent != cards_dir.resolve() and path.parent != cards_dir
    try:
        raw = tomllib.loads(read_text(path))
    except ValueError as error:  # TOMLDecodeError, or an integer of more digits than Python reads
        raise BenchError(f"{path}: invalid TOML: {error}") from None
    for key in ("name", "split", "sources"):
        if key not in raw:
            raise BenchError(f"{path}: missing required key {key!r}")
    check_name(raw["name"], str(path))
    if raw["split"] not in ("leave_one_out", "global_time"):
        raise BenchError(f"{path}: split must be 'leave_one_out' or 'global_time', got {raw['split']!r}")
    sources = []
    for number, entry in enumerate(raw["sources"], start=1):
        fmt = entry.get("format")
        if fmt not in REQUIRED_BY_FORMAT:
            raise BenchError(f"{path}: sources[{number}].format must be one of {sorted(REQUIRED_BY_FORMAT)}")
        missing = [key for key in REQUIRED_BY_FORMAT[fmt] if key not in entry]
        if missing:
            raise BenchError(f"{path}: sources[{number}] ({fmt}) lacks {missing}")
        paths = {}
        for key in PATH_KEYS:
            if key in entry:
                # Fixtures live in the repo; everything else is read from the data dir (a card of one's
                # own: from its folder; absolute paths as given).
                base = path.parent if own_data else cards_dir if entry[key].startswith("fixtures/") else data_dir
                paths[key] = base / entry[key]
        options = {key: value for key, value in entry.items() if key not in PATH_KEYS}
        sources.append(Source(fmt, paths, options))
    return DatasetCard(
        name=raw["name"],
        description=raw.get("description", ""),
        split=raw["split"],
        title_kind=raw.get("title_kind", "title"),
        sources=sources,
        expected=dict(raw.get("expected", {})),
        download=dict(raw.get("download", {})),
        card_path=path,
        drop_short_users=bool(raw.get("drop_short_users", False)),
        text_fields=_text_fields(path, raw),
    )


def _text_fields(path: Path, raw: dict[str, Any]) -> tuple[str, ...] | None:
    fields = raw.get("text_fields")
    if fields is None:
        return None
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise BenchError(f"{path}: text_fields must be a list of field names, e.g. [\"brand\", \"categories\"]")
    return tuple(fields)


def pick_source(card: DatasetCard, data_dir: Path) -> Source:
    """First source whose files all exist, else a clear error listing what was looked for."""
    for source in card.sources:
        if source.available():
            return source
    if not data_dir.exists():
        raise BenchError(f"data dir {data_dir} does not exist: set BENCH_DATA_DIR or [paths].data_dir in "
                         f"bench.toml (or run `bench data download {card.name}`)")
    looked = "; ".join(f"{source.format}: missing {', '.join(map(str, source.missing()))}" for source in card.sources)
    raise BenchError(f"dataset {card.name!r}: no source found under {data_dir} ({looked})")
