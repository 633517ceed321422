"""`bench cache ls|clean`: the training work dirs under .cache/work, which otherwise only grow.

A work dir holds one run's checkpoints (resume points). Once its record exists, the checkpoints
are no longer needed to report the run; an unfinished run's dir is what lets it resume.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WorkDir:
    path: Path
    dataset: str
    run: str  # <method>-<config hash>, as the record's file name
    bytes: int
    recorded: bool


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def work_dirs(cache_dir: Path, results_dir: Path) -> list[WorkDir]:
    root = cache_dir / "work"
    found = []
    for path in sorted(root.glob("*/*")) if root.exists() else []:
        if path.is_dir():
            record = results_dir / "runs" / path.parent.name / f"{path.name}.json"
            found.append(WorkDir(path, path.parent.name, path.name, folder_bytes(path), record.exists()))
    return found


def clean(cache_dir: Path, results_dir: Path, include_unfinished: bool = False) -> list[WorkDir]:
    """Remove the work dirs of recorded runs (and, with include_unfinished, every other one too)."""
    removed = [w for w in work_dirs(cache_dir, results_dir) if w.recorded or include_unfinished]
    for entry in removed:
        shutil.rmtree(entry.path)
    return removed
