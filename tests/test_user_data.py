"""Bring your own data: the formats researchers have (LC-Rec JSON, RecBole atomic, plain CSV), a card
anywhere, `bench data init`, and problems reported by file, line and user before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def bench(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def users(count: int = 12, length: int = 5) -> dict[str, list[str]]:
    return {f"u{u}": [f"i{(u + k) % 9}" for k in range(length)] for u in range(count)}


def write_lcrec(folder: Path, sequences: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.inter.json").write_text(json.dumps(sequences))
    (folder / "mine.item.json").write_text(json.dumps({f"i{k}": {"title": f"Item {k}", "brand": "B",
                                                                 "categories": "Beauty"} for k in range(9)}))


def test_lcrec_json_through_data_init_and_a_card_outside_the_repo(isolated: Path, tmp_path: Path):
    data = tmp_path / "mydata"
    write_lcrec(data, users())
    made = bench("data", "init", "mine", "--format", "lcrec_json", "--inter", str(data / "mine.inter.json"),
                 "--items", str(data / "mine.item.json"), "--out", str(data))
    assert made.returncode == 0, made.stderr
    card = (data / "mine.toml").read_text()
    assert "users = 12" in card and "items = 9" in card and "interactions = 60" in card
    result = bench("run", "--method", "pop", "--dataset", str(data / "mine.toml"))
    assert result.returncode == 0, result.stderr
    record = json.loads(next((isolated / "results" / "runs" / "mine").glob("*.json")).read_text())
    assert record["dataset_card"]["tracked_by_git"] is False and record["git_rev"].endswith("+untracked-card")
    assert record["num_eval_requests"] == 12
    # The same card by name through the search path.
    by_name = bench("run", "--method", "pop", "--dataset", "mine", env={"BENCH_DATASETS_DIR": str(data)})
    assert by_name.returncode == 0, by_name.stderr


def test_recbole_atomic_sorts_by_time_and_reads_titles(tmp_path: Path):
    from bench.data.user_formats import read_recbole_atomic

    inter = tmp_path / "x.inter"
    inter.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                     "a\tp\t30\na\tq\t10\na\tr\t20\nb\tq\t5\nb\tp\t6\nb\tr\t7\n")
    (tmp_path / "x.item").write_text("item_id:token\ttitle:token_seq\np\tPen\nq\tQuill\nr\tRuler\n")
    raw = read_recbole_atomic(inter, tmp_path / "x.item")
    by_user = {user: [raw.asins[i] for i in seq] for user, seq in zip(raw.user_ids, raw.sequences)}
    assert by_user == {"a": ["q", "r", "p"], "b": ["q", "p", "r"]}
    assert dict(zip(raw.asins, raw.titles)) == {"q": "Quill", "r": "Ruler", "p": "Pen"}
    assert raw.origins == ["x.inter:2", "x.inter:5"]


def write_tied(fmt: str, folder: Path) -> Path:
    """User "a" buys z, then m, then b, all at the same time, written in that order, then c later; the
    reader must keep file order for the tie (item-id order would give b, m, z)."""
    import gzip

    events = [("a", "z", 10), ("a", "m", 10), ("a", "b", 10), ("a", "c", 20)]
    if fmt == "recbole_atomic":
        path = folder / "x.inter"
        path.write_text("user_id:token\titem_id:token\ttimestamp:float\n"
                        + "".join(f"{u}\t{i}\t{t}\n" for u, i, t in events))
    elif fmt == "interactions_csv":
        path = folder / "x.csv"
        path.write_text("user,item,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in events))
    elif fmt == "amazon2023":
        path = folder / "x.jsonl"
        path.write_text("".join(json.dumps({"user_id": u, "parent_asin": i, "timestamp": t}) + "\n"
                                for u, i, t in events))
    else:
        path = folder / "reviews.json.gz"
        path.write_bytes(gzip.compress("".join(json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t})
                                               + "\n" for u, i, t in events).encode()))
    return path


@pytest.mark.parametrize("fmt", ["recbole_atomic", "interactions_csv", "amazon2023", "amazon_raw"])
def test_equal_timestamps_keep_file_order(fmt: str, tmp_path: Path):
    from bench.data.amazon2023 import read_amazon2023
    from bench.data.readers import read_amazon_raw
    from bench.data.user_formats import read_interactions_csv, read_recbole_atomic

    path = write_tied(fmt, tmp_path)
    if fmt == "amazon_raw":
        (tmp_path / "meta.json").write_text("")
        raw = read_amazon_raw(path, tmp_path / "meta.json", core=1)
    elif fmt == "amazon2023":
        raw = read_amazon2023(path, None, core=0)
    else:
        raw = {"recbole_atomic": read_recbole_atomic, "interactions_csv": read_interactions_csv}[fmt](path, None)
    assert [[raw.asins[i] for i in seq] for seq in raw.sequences] == [["z", "m", "b", "c"]]


def test_csv_with_a_short_user_is_refused_by_line_and_user_unless_dropped(isolated: Path, tmp_path: Path):
    rows = ["user,item,timestamp"] + [f"u{u},i{(u + k) % 7},{k}" for u in range(10) for k in range(4)]
    rows.insert(7, "shorty,i1,1")  # a user with a single item, on line 8
    (tmp_path / "x.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "x.toml").write_text('name = "x"\nsplit = "leave_one_out"\n\n[[sources]]\n'
                                     'format = "interactions_csv"\ninter = "x.csv"\n')
    refused = bench("run", "--method", "pop", "--dataset", str(tmp_path / "x.toml"))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("error: x.csv:8: user shorty has 1 item(s)")
    assert not (isolated / "cache" / "datasets").exists() or not any((isolated / "cache" / "datasets").iterdir())
    (tmp_path / "x.toml").write_text('name = "x"\nsplit = "leave_one_out"\ndrop_short_users = true\n\n'
                                     '[[sources]]\nformat = "interactions_csv"\ninter = "x.csv"\n\n'
                                     '[expected]\nusers = 11\n')
    mismatch = bench("run", "--method", "pop", "--dataset", str(tmp_path / "x.toml"))
    assert mismatch.returncode == 2 and "counts differ from its card" in mismatch.stderr
    allowed = bench("run", "--method", "pop", "--dataset", str(tmp_path / "x.toml"), "--allow-count-mismatch")
    assert allowed.returncode == 0, allowed.stderr
    record = json.loads(next((isolated / "results" / "runs" / "x").glob("*.json")).read_text())
    assert record["dataset_card"]["count_mismatches"] == {"users": [11, 10]}
    assert record["dataset_info"]["short_users_dropped"] == 1 and record["dataset_info"]["users"] == 10


def write_amazon2023(folder: Path, sequences: list[list[str]], titles: dict[str, str | None]) -> tuple[Path, Path]:
    """The tiny fixture as Amazon Reviews 2023 files: one review per line (written newest first, so the
    reader must sort by timestamp), a repeated review of a pair, meta with store/categories/description."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    reviews = []
    for user, items in enumerate(sequences):
        for position, item in reversed(list(enumerate(items))):
            reviews.append({"user_id": f"U{user}", "parent_asin": item, "asin": f"{item}-variant",
                            "timestamp": 1_600_000_000_000 + 1000 * position, "rating": 5.0, "text": "ok"})
        reviews.append({**reviews[-1], "timestamp": 1_700_000_000_000})  # the same pair again, later: ignored
    inter = folder / "Tiny.jsonl.gz"
    with gzip.open(inter, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in reviews) + "\n")
    meta = folder / "meta_Tiny.jsonl"
    meta.write_text("\n".join(json.dumps({"parent_asin": item, "title": title, "store": "Acme",
                                          "categories": ["Beauty", "Skin"], "description": ["Soft.", "Gentle."]})
                              for item, title in titles.items()) + "\n")
    return inter, meta


def test_amazon2023_gives_the_asin_sequence_fixture_split_and_keeps_item_text(isolated: Path, tmp_path: Path):
    from bench.data.prepare import prepare

    fixture = REPO / "datasets" / "fixtures" / "tiny"
    lines = [line.split() for line in (fixture / "user_sequence.txt").read_text().splitlines() if line.strip()]
    titles = json.loads((fixture / "asin2title.json").read_text())
    inter, meta = write_amazon2023(tmp_path / "raw", [line[1:] for line in lines], titles)
    made = bench("data", "init", "mine", "--format", "amazon2023", "--inter", str(inter), "--items", str(meta),
                 "--out", str(tmp_path / "cards"), "--core", "0")
    assert made.returncode == 0, made.stderr
    card = (tmp_path / "cards" / "mine.toml").read_text()
    assert "core = 0" in card and 'text_fields = ["brand", "categories", "description"]' in card
    ours, _ = prepare(str(tmp_path / "cards" / "mine.toml"), tmp_path, isolated / "cache")
    reference, _ = prepare("tiny", tmp_path, isolated / "cache")
    assert ours.split.hash == reference.split.hash and ours.catalogue.asins == reference.catalogue.asins
    assert ours.catalogue.titles == reference.catalogue.titles
    asin = next(asin for asin, title in titles.items() if title)
    item = ours.catalogue.asins.index(asin)
    assert ours.catalogue.describe(item, ("title", "brand", "categories", "description")) == (
        f"{ours.catalogue.titles[item]}; brand: Acme; categories: Beauty > Skin; description: Soft. Gentle.")
    again, _ = prepare(str(tmp_path / "cards" / "mine.toml"), tmp_path, isolated / "cache")  # from the cache
    assert again.catalogue.text == ours.catalogue.text and reference.catalogue.text is None


def test_amazon2023_k_core_and_bad_lines(tmp_path: Path):
    from bench.data.amazon2023 import read_amazon2023
    from bench.errors import BenchError

    # u0..u4 review items a..e (5 each); u5 reviews only "a" and "z": 2-core drops "z", then u5 (1 item).
    rows = [{"user_id": f"u{u}", "parent_asin": item, "timestamp": k} for u in range(5)
            for k, item in enumerate("abcde")] + [{"user_id": "u5", "parent_asin": "a", "timestamp": 1},
                                                  {"user_id": "u5", "parent_asin": "z", "timestamp": 2}]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    kept = read_amazon2023(path, None, core=2)
    assert kept.user_ids == [f"u{u}" for u in range(5)] and sorted(kept.asins) == list("abcde")
    assert len(read_amazon2023(path, None, core=0).user_ids) == 6
    path.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"user_id": "u9", "timestamp": 3}) + "\n")
    with pytest.raises(BenchError, match=r"r.jsonl:2: expected fields user_id, parent_asin"):
        read_amazon2023(path, None)


BAD_NAMES = ["../../x", "ABSOLUTE", "", "a;b", "a b", ".hidden"]


def every_path(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_card_with_an_unsafe_name_writes_nothing(name: str, isolated: Path):
    """The name becomes folders under results/ and the cache: "../../x" would put the record in <tmp>/x/, an
    absolute name wherever it points, an empty one loose into results/runs/."""
    name = str(isolated / "elsewhere" / "x") if name == "ABSOLUTE" else name
    fixture = REPO / "datasets" / "fixtures" / "tiny"
    card = isolated / "cards" / "card.toml"
    card.parent.mkdir()
    card.write_text(f"name = {json.dumps(name)}\nsplit = 'leave_one_out'\n\n[[sources]]\nformat = 'asin_sequences'\n"
                    f"sequences = '{fixture / 'user_sequence.txt'}'\ntitles = '{fixture / 'asin2title.json'}'\n")
    before = every_path(isolated)
    result = bench("run", "--method", "pop", "--dataset", str(card))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and f"dataset name {name!r} is not allowed" in line, line
    assert every_path(isolated) == before


@pytest.mark.parametrize("name", [*BAD_NAMES, "../../../evilcard"])
def test_data_init_refuses_an_unsafe_name_and_writes_nothing(name: str, isolated: Path):
    name = str(isolated / "elsewhere" / "evilcard") if name == "ABSOLUTE" else name
    out = isolated / "out" / "a" / "b"  # "../../../evilcard" would land in <tmp>/evilcard.toml, outside it
    before = every_path(isolated)
    result = bench("data", "init", name, "--format", "interactions_csv", "--inter",
                   "datasets/fixtures/byo/interactions.csv", "--out", str(out))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: bench data init: ") and f"dataset name {name!r} is not allowed" in line, line
    assert every_path(isolated) == before
