"""A run's identity (its record path and work dir) covers everything that changes its result: the data's
content (sequences and item text), the training budget and the device. Checked on the tiny fixture, so no
fault here hides behind the tests that need the shared data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.config import load_config
from bench.data.prepare import prepare
from bench.runs.run import run
from bench.runs.setup import run_paths

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "datasets" / "fixtures" / "tiny"
# The record path of `bench run --method pop --dataset tiny` before the catalogue entered the identity: with
# the catalogue at its [catalogue_hash_neutral] value a run must still find records made then.
PATH_BEFORE_CATALOGUE = "pop-6bc4fb25f65c.json"


def tiny_copy(folder: Path, *, title: tuple[str, str] | None = None, swap_user: str | None = None) -> str:
    """The tiny fixture as a card of one's own named "tiny", optionally with one item's title replaced or the
    first two items of one user swapped; returns the card's path for `--dataset`."""
    folder.mkdir(parents=True)
    titles = json.loads((FIXTURE / "asin2title.json").read_text())
    if title is not None:
        titles[title[0]] = title[1]
    (folder / "asin2title.json").write_text(json.dumps(titles, indent=0))
    lines = (FIXTURE / "user_sequence.txt").read_text().splitlines()
    if swap_user is not None:
        [row] = [n for n, line in enumerate(lines) if line.split()[0] == swap_user]
        user, first, second, *rest = lines[row].split()
        lines[row] = " ".join([user, second, first, *rest])
    (folder / "user_sequence.txt").write_text("\n".join(lines) + "\n")
    card = folder / "tiny.toml"
    card.write_text('name = "tiny"\nsplit = "leave_one_out"\n\n[[sources]]\nformat = "asin_sequences"\n'
                    'sequences = "user_sequence.txt"\ntitles = "asin2title.json"\n')
    return str(card)


def record_path(dataset: str, config: dict[str, Any] | None = None, **options: Any) -> Path:
    return run("pop", dataset, config=config or load_config(), dry_run=True, progress=False, **options).path


def hashes(dataset: str) -> tuple[str, str]:
    """(split hash, catalogue hash) of a prepared dataset."""
    paths = run_paths(load_config())
    prepared = prepare(dataset, paths.data_dir, paths.cache_dir)[0]
    return prepared.split.hash, prepared.catalogue.hash


def test_a_changed_title_is_another_run(isolated: Path):
    """A title fix keeps every count and the split: only the catalogue tells the two datasets apart."""
    same = tiny_copy(isolated / "same")
    fixed = tiny_copy(isolated / "fixed", title=("B000000003", "Tiny product 3, fixed title"))
    assert hashes(fixed)[0] == hashes("tiny")[0] and hashes(fixed)[1] != hashes("tiny")[1]
    assert record_path(same) == record_path("tiny")  # the content decides, not the card file
    assert record_path(fixed) != record_path("tiny")


def test_the_catalogue_at_its_neutral_value_keeps_the_earlier_record_path(isolated: Path):
    """Records made before the catalogue entered the hash stay found while their data is unchanged; any
    other catalogue is hashed as usual."""
    config = load_config()
    config["catalogue_hash_neutral"] = {"tiny": hashes("tiny")[1]}
    assert record_path("tiny", config).name == PATH_BEFORE_CATALOGUE
    fixed = tiny_copy(isolated / "fixed", title=("B000000003", "Tiny product 3, fixed title"))
    assert record_path(fixed, config).name != PATH_BEFORE_CATALOGUE
    config["catalogue_hash_neutral"] = {}
    assert record_path("tiny", config).name != PATH_BEFORE_CATALOGUE


def test_a_changed_split_with_the_same_catalogue_is_another_run(isolated: Path):
    """U0004's first two items (both first seen earlier, by U0000) swapped: the same items, titles and
    counts, another training sequence."""
    swapped = tiny_copy(isolated / "swapped", swap_user="U0004")
    assert hashes(swapped)[1] == hashes("tiny")[1] and hashes(swapped)[0] != hashes("tiny")[0]
    assert record_path(swapped) != record_path("tiny")


def test_the_training_budget_and_the_device_are_part_of_the_identity(isolated: Path,
                                                                      monkeypatch: pytest.MonkeyPatch):
    import torch

    plain = record_path("tiny")
    assert record_path("tiny", max_train_minutes=5) != plain
    assert record_path("tiny", max_train_minutes=5) != record_path("tiny", max_train_minutes=6)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a dry run computes nothing on it
    assert record_path("tiny", device="cuda") != plain


def test_the_work_dir_follows_the_identity(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    """Checkpoints of a run on the old titles are never resumed for the fixed ones."""
    from tests.test_run import spy_config

    config = spy_config(isolated, monkeypatch)
    fixed = tiny_copy(isolated / "fixed", title=("B000000003", "Tiny product 3, fixed title"))
    for dataset in ("tiny", fixed):
        run("workspy", dataset, config=config, progress=False)
    assert (isolated / "fits.log").read_text().split() == ["fresh", "fresh"]
    assert len(list((isolated / "cache" / "work" / "tiny").iterdir())) == 2
