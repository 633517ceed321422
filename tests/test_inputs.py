"""Bad input gives one clear error naming the file/line and what was expected."""

import gzip
import json
from pathlib import Path

import pytest

from bench.data.readers import read_amazon_raw, read_asin_sequences, read_int_sequences, read_title_map
from bench.errors import BenchError


def test_truncated_json_gz(tmp_path: Path):
    reviews = tmp_path / "reviews_Beauty_5.json.gz"
    payload = gzip.compress(b''.join(
        json.dumps({"reviewerID": f"U{i}", "asin": f"A{i}", "unixReviewTime": i}).encode() + b"\n"
        for i in range(2000)))
    reviews.write_bytes(payload[: len(payload) // 2])
    with pytest.raises(BenchError, match=r"reviews_Beauty_5\.json\.gz: truncated or corrupt gzip"):
        read_amazon_raw(reviews, tmp_path / "meta.json.gz")


def test_sequence_line_with_non_integer_id(tmp_path: Path):
    path = tmp_path / "sequential_data.txt"
    path.write_text("1 1 2 3\n2 4 x5 6\n")
    with pytest.raises(BenchError, match=r"sequential_data\.txt:2: id 'x5' is not an integer"):
        read_int_sequences(path)


def test_empty_title(tmp_path: Path):
    path = tmp_path / "asin2title.json"
    path.write_text(json.dumps({"B1": "Good", "B2": "  "}))
    with pytest.raises(BenchError, match=r"asin2title\.json: item B2: empty title"):
        read_title_map(path)


def test_invalid_json_names_the_line(tmp_path: Path):
    path = tmp_path / "asin2title.json"
    path.write_text('{\n"B1": "x",\n"B2": \n}')
    with pytest.raises(BenchError, match=r"asin2title\.json:4: invalid JSON"):
        read_title_map(path)


def test_missing_file_and_one_field_line(tmp_path: Path):
    with pytest.raises(BenchError, match="file not found"):
        read_int_sequences(tmp_path / "absent.txt")
    path = tmp_path / "user_sequence.txt"
    path.write_text("U1 B1 B2 B3\nU2\n")
    with pytest.raises(BenchError, match=r"user_sequence\.txt:2: expected 'user ASIN ASIN \.\.\.'"):
        read_asin_sequences(path, {})


def test_raw_amazon_reader_sorts_by_time_and_applies_core(tmp_path: Path):
    rows = []
    for user in range(3):
        for item in [3, 1, 2]:  # written out of time order
            rows.append({"reviewerID": f"U{user}", "asin": f"I{item}", "unixReviewTime": 100 * item + user})
        rows.append({"reviewerID": f"U{user}", "asin": f"RARE{user}", "unixReviewTime": 999})
    reviews = tmp_path / "reviews.json.gz"
    reviews.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    meta = tmp_path / "meta.json.gz"
    meta.write_bytes(gzip.compress(b"{'asin': 'I1', 'title': 'One &amp; only'}\n{'asin': 'I2'}\n"))
    raw = read_amazon_raw(reviews, meta, core=3)
    assert [[raw.asins[i] for i in seq] for seq in raw.sequences] == [["I1", "I2", "I3"]] * 3
    assert dict(zip(raw.asins, raw.titles)) == {"I1": "One & only", "I2": None, "I3": None}


def test_raw_amazon_reader_keeps_the_first_review_of_a_repeated_pair(tmp_path: Path):
    """A user who reviews I1, then I2, then I1 again bought I1 once, before I2: the repeat is no interaction
    (kept, it would be a test target; kept as the later one, it would reorder the sequence)."""
    rows = [{"reviewerID": "U0", "asin": "I1", "unixReviewTime": 100},
            {"reviewerID": "U0", "asin": "I2", "unixReviewTime": 200},
            {"reviewerID": "U0", "asin": "I3", "unixReviewTime": 300},
            {"reviewerID": "U0", "asin": "I1", "unixReviewTime": 400}]
    reviews = tmp_path / "reviews.json.gz"
    reviews.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
    meta = tmp_path / "meta.json.gz"
    meta.write_bytes(gzip.compress(b"{'asin': 'I1', 'title': 'One'}\n"))
    raw = read_amazon_raw(reviews, meta, core=1)
    assert [[raw.asins[i] for i in seq] for seq in raw.sequences] == [["I1", "I2", "I3"]]


def test_download_without_network_says_where_to_put_files(tmp_path: Path, monkeypatch):
    import urllib.request

    from bench.data.prepare import download

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(BenchError, match=r"reviews_Beauty_5\.json\.gz failed .*place the file at .*raw"):
        download("beauty", tmp_path)
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(BenchError, match="no raw download"):
        download("video_games", tmp_path)
