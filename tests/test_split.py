"""The shared split on hand-made data, and the real Beauty counts."""

from pathlib import Path

import pytest

from bench.data.prepare import prepare
from bench.data.split import global_time, leave_one_out


def test_leave_one_out_on_hand_made_sequences():
    split = leave_one_out([[1, 2, 3, 4, 5], [7, 8, 9]])
    assert split.train == [[1, 2, 3], [7]]
    assert split.valid.histories == [[1, 2, 3], [7]] and split.valid.targets == [4, 8]
    assert split.test.histories == [[1, 2, 3, 4], [7, 8]] and split.test.targets == [5, 9]


def test_leave_one_out_refuses_short_sequences():
    with pytest.raises(ValueError, match="at least 3 items"):
        leave_one_out([[1, 2, 3], [4, 5]])


def test_global_time_makes_one_request_per_later_interaction():
    split = global_time(train=[[1, 2], [], [5]], valid=[[3], [6], []], test=[[4, 9], [7], []])
    assert split.train == [[1, 2], [], [5]]
    # user 1 has no earlier item before its valid item: that request is dropped.
    assert list(zip(split.valid.users, split.valid.histories, split.valid.targets)) == [(0, [1, 2], 3)]
    assert list(zip(split.test.users, split.test.histories, split.test.targets)) == [
        (0, [1, 2, 3], 4), (0, [1, 2, 3, 4], 9), (1, [6], 7)]


def test_split_hash_changes_with_content():
    assert leave_one_out([[1, 2, 3]]).hash != leave_one_out([[1, 2, 4]]).hash
    assert leave_one_out([[1, 2, 3]]).hash == leave_one_out([[1, 2, 3]]).hash


def test_tiny_fixture_prepares_and_caches(tmp_path: Path):
    dataset, info = prepare("tiny", tmp_path / "no-data-needed", tmp_path / "cache")
    assert (info["users"], info["items"]) == (40, 30)
    titles = dict(zip(dataset.catalogue.asins, dataset.catalogue.titles))
    assert titles["B000000000"] == "Tiny product 0 & friends"  # HTML entities unescaped
    assert titles["B000000007"] is None  # null in the title map = no title
    again, info2 = prepare("tiny", tmp_path, tmp_path / "cache")
    assert info2["cache"] == info["cache"] and again.split.hash == dataset.split.hash



def test_a_cache_another_process_published_meanwhile_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every torchrun rank prepares the same cache at once. A process that finds the folder published by
    another while it was reading the sources keeps that folder (others may be reading it: deleting it and
    renaming over it failed one CI run with 'Directory not empty') and drops its own copy."""
    import bench.data.prepare as prepare_module

    read_source = prepare_module._read_source

    def another_process_publishes_first(source):
        raw = read_source(source)
        monkeypatch.setattr(prepare_module, "_read_source", read_source)
        _, theirs = prepare("tiny", tmp_path, tmp_path / "cache")
        (Path(theirs["cache"]) / "reader.mark").write_text("a reader's view of the published folder\n")
        return raw

    monkeypatch.setattr(prepare_module, "_read_source", another_process_publishes_first)
    dataset, info = prepare("tiny", tmp_path, tmp_path / "cache")
    folder = Path(info["cache"])
    assert (folder / "reader.mark").exists(), "the folder another process published was replaced"
    assert info["users"] == 40 and sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_force_replaces_the_cache_and_leaves_no_temporary_folder(tmp_path: Path):
    _, info = prepare("tiny", tmp_path, tmp_path / "cache")
    folder = Path(info["cache"])
    (folder / "stale.mark").write_text("from before --force\n")
    _, again = prepare("tiny", tmp_path, tmp_path / "cache", force=True)
    assert again["cache"] == info["cache"] and not (folder / "stale.mark").exists()
    assert (folder / "info.json").exists() and sorted(p.name for p in folder.parent.iterdir()) == [folder.name]


def test_a_forced_prepare_that_cannot_publish_keeps_the_old_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    _, info = prepare("tiny", tmp_path, tmp_path / "cache")
    folder = Path(info["cache"])
    rename = Path.rename

    def new_copy_cannot_land(self: Path, target):
        if Path(target) == folder and ".old-" not in self.name:
            raise PermissionError("simulated: the new copy cannot be renamed into place")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", new_copy_cannot_land)
    with pytest.raises(PermissionError):
        prepare("tiny", tmp_path, tmp_path / "cache", force=True)
    assert (folder / "info.json").exists() and sorted(p.name for p in folder.parent.iterdir()) == [folder.name]

@pytest.mark.realdata
def test_real_beauty_counts(real_data_dir: Path, tmp_path: Path):
    dataset, info = prepare("beauty", real_data_dir, tmp_path)
    assert (info["users"], info["items"], info["interactions"]) == (22363, 12101, 198502)
    assert len(dataset.split.test) == 22363
    assert sum(len(t) for t in dataset.split.train) == 198502 - 2 * 22363


@pytest.mark.realdata
def test_p5_and_asin_sources_give_the_same_split(real_data_dir: Path, tmp_path: Path):
    from bench.data.readers import read_asin_sequences, read_p5, read_title_map

    beauty = real_data_dir / "amazon" / "beauty"
    titles = read_title_map(beauty / "asin2title.json")
    gram = read_asin_sequences(beauty / "GRAM" / "user_sequence.txt", titles)
    p5 = read_p5(beauty / "LLM-RecSys-ID" / "sequential_data.txt", beauty / "LLM-RecSys-ID" / "datamaps.json",
                 titles)
    assert gram.asins == p5.asins and gram.sequences == p5.sequences


@pytest.mark.realdata
def test_real_video_games_global_time(real_data_dir: Path, tmp_path: Path):
    dataset, info = prepare("video_games", real_data_dir, tmp_path)
    assert (info["users"], info["items"], info["interactions"]) == (49156, 17332, 342329)
    assert dataset.split.protocol == "global_time"
    assert len(dataset.split.valid) == 22609 and len(dataset.split.test) > 19000
