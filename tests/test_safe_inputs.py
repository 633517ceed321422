"""The README's promise for bad input, kept at the command line: one `error:` line naming the file, field or
key and what was expected, exit 2, before any compute, no traceback and nothing written; SIGTERM handled
as Ctrl-C."""

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import start_fitting_run

REPO = Path(__file__).resolve().parent.parent
BYO = REPO / "datasets" / "fixtures" / "byo"


def bench(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def refused(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The one `error:` line of a refused command (warnings aside), after checking exit 2 and no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def files_under(*folders: Path) -> list[Path]:
    return [path for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()]


def latin1_copy(source: Path, target: Path) -> Path:
    """`source` re-encoded as Latin-1 with one user id holding a non-ASCII letter (an 'e' with accent)."""
    target.write_bytes(source.read_text(encoding="utf-8").replace("U0000", "Ué000", 1).encode("latin-1"))
    return target


def own_card(folder: Path, inter: Path) -> Path:
    """A hand-written interactions_csv card beside `inter`."""
    card = folder / "shop.toml"
    card.write_text(f'name = "shop"\nsplit = "leave_one_out"\n\n[[sources]]\nformat = "interactions_csv"\n'
                    f'inter = "{inter.name}"\n')
    return card


@pytest.mark.parametrize("fmt, name", [("interactions_csv", "interactions.csv"), ("lcrec_json", "shop.inter.json")])
def test_data_init_refuses_a_file_that_is_not_utf8(fmt: str, name: str, isolated: Path):
    inter = isolated / name
    if fmt == "lcrec_json":
        inter.write_bytes(json.dumps({"Ué000": ["a", "b", "c"]}, ensure_ascii=False).encode("latin-1"))
    else:
        latin1_copy(BYO / "interactions.csv", inter)
    result = bench("data", "init", "shop", "--format", fmt, "--inter", str(inter), "--out", str(isolated / "cards"))
    line = refused(result, f"{name}:{1 if fmt == 'lcrec_json' else 2}: not UTF-8 text", "expected UTF-8")
    assert "byte 0xe9" in line
    assert not (isolated / "cards").exists()


def test_run_refuses_data_that_is_not_utf8_before_anything_is_written(isolated: Path):
    card = own_card(isolated, latin1_copy(BYO / "interactions.csv", isolated / "interactions.csv"))
    refused(bench("run", "--method", "pop", "--dataset", str(card)), "interactions.csv:2: not UTF-8 text")
    assert files_under(isolated / "results", isolated / "cache") == []


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(isolated: Path):
    inter = isolated / "interactions.csv"
    inter.write_bytes((BYO / "interactions.csv").read_text(encoding="utf-8").encode("utf-8-sig"))
    result = bench("data", "init", "shop", "--format", "interactions_csv", "--inter", str(inter),
                   "--out", str(isolated / "cards"))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "40 users" in result.stdout


def test_an_empty_interactions_file_is_refused_not_carded(isolated: Path):
    inter = isolated / "interactions.csv"
    inter.write_text("user,item,timestamp\n")
    result = bench("data", "init", "shop", "--format", "interactions_csv", "--inter", str(inter),
                   "--out", str(isolated / "cards"))
    refused(result, "interactions.csv: no interactions found (0 users)")
    assert not (isolated / "cards").exists()
    # A card written by hand over the same file: refused before anything is cached.
    card = own_card(isolated, inter)
    refused(bench("run", "--method", "pop", "--dataset", str(card)), "no interactions found (0 users)")
    assert files_under(isolated / "results", isolated / "cache") == []


def corrupt_record(isolated: Path) -> Path:
    """A pop record on tiny whose bytes are no longer UTF-8 (one Latin-1 byte in the method name)."""
    assert bench("run", "--method", "pop", "--dataset", "tiny").returncode == 0
    [path] = (isolated / "results" / "runs" / "tiny").glob("pop-*.json")
    path.write_bytes(path.read_bytes().replace(b'"pop"', b'"p\xe9p"', 1))
    return path


def test_a_record_that_is_not_utf8_is_skipped_by_leaderboard_and_rerun_by_run(isolated: Path):
    path = corrupt_record(isolated)
    board = bench("leaderboard")
    assert board.returncode == 0 and "Traceback" not in board.stderr, board.stderr
    assert f"warning: skipped {path}:" in board.stderr and "not UTF-8 text" in board.stderr
    refused(bench("leaderboard", "--strict"), f"{path.name}:", "not UTF-8 text")
    again = bench("run", "--method", "pop", "--dataset", "tiny")
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert "not UTF-8 text" in again.stdout and path.with_name(path.name + ".corrupt").exists()
    assert json.loads(path.read_text(encoding="utf-8"))["method"] == "pop"


@pytest.mark.parametrize("args, message", [
    (("--seed", "-1"), "--seed -1: expected an integer from 0 to 4294967295"),
    (("--seed", "4294967296"), "--seed 4294967296: expected an integer from 0 to 4294967295"),
    (("--seeds", "0,-1"), "--seeds: -1: expected an integer from 0 to 4294967295"),
    (("--set", "eval.max_eval_users=" + "9" * 5000), "eval.max_eval_users has 5,000 digits"),
])
def test_out_of_range_numbers_are_refused_before_any_work(args: tuple[str, ...], message: str, isolated: Path):
    line = refused(bench("run", "--method", "pop", "--dataset", "tiny", *args), message)
    assert len(line) < 300  # the 5,000-digit value is not echoed whole
    assert not (isolated / "results").exists() and not (isolated / "cache").exists()


LONG = "x" * 5000


@pytest.mark.parametrize("args", [("run", "--method", "pop", "--dataset", "tiny", "--set", f"eval.target={LONG}"),
                                  ("run", "--method", "pop", "--dataset", "tiny", "--set", f"eval.{LONG}=1"),
                                  ("run", "--method", LONG, "--dataset", "tiny"),
                                  ("sweep", "--method", "pop", "--dataset", "tiny", "--grid", LONG)])
def test_a_rejected_value_is_echoed_cut_short(args: tuple[str, ...], isolated: Path):
    line = refused(bench(*args))
    assert "x" * 81 not in line and "characters)" in line


def test_rescore_of_a_missing_file_is_one_line(isolated: Path):
    refused(bench("rescore", str(isolated / "absent.json")), "absent.json: file not found")


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write into, root included (chmod does not stop root; the immutable flag does)."""
    folder = tmp_path / "published"
    folder.mkdir()
    folder.chmod(0o555)
    immutable = (os.geteuid() == 0 and shutil.which("chattr") is not None
                 and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0)
    probe = folder / ".probe"
    try:
        probe.touch()
        probe.unlink()
        pytest.skip("cannot make a read-only folder here (root without chattr)")
    except OSError:
        pass
    yield folder
    if immutable:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def test_leaderboard_into_a_read_only_folder_is_one_line(read_only_folder: Path, isolated: Path):
    refused(bench("leaderboard", "--results-dir", str(read_only_folder)), "published: cannot write there")
    assert files_under(read_only_folder) == []


def test_sweep_checks_every_point_before_running_the_first(isolated: Path):
    result = bench("sweep", "--method", "pop", "--dataset", "tiny", "--grid", "eval.max_eval_users=10,-1")
    refused(result, "eval.max_eval_users: expected an integer >= 0, got -1")
    assert files_under(isolated / "results", isolated / "cache") == []


def test_demo_only_refuses_an_unknown_name_with_the_nearest(isolated: Path):
    refused(bench("demo", "--only", "coev"), "--only 'coev': not a [demo] method. Did you mean 'cove'?")
    assert files_under(isolated / "results", isolated / "cache") == []


def test_max_train_minutes_zero_means_no_budget_as_in_bench_toml(isolated: Path):
    assert "0 = no budget" in bench("run", "--help").stdout
    first = bench("run", "--method", "pop", "--dataset", "tiny", "--max-train-minutes", "0")
    assert first.returncode == 0, first.stderr
    [record] = (isolated / "results" / "runs" / "tiny").glob("pop-*.json")
    assert json.loads(record.read_text())["max_train_minutes"] is None
    same = bench("run", "--method", "pop", "--dataset", "tiny", "--dry-run")
    assert same.returncode == 0 and same.stdout.strip() == f"recorded: {record}"
    refused(bench("run", "--method", "pop", "--dataset", "tiny", "--max-train-minutes", "-1"),
            "--max-train-minutes -1.0: expected a number of minutes >= 0 (0 = no budget)")


def test_untrained_settings_and_k_beyond_the_catalogue_are_warned_about(isolated: Path):
    result = bench("run", "--method", "sasrec_native", "--dataset", "tiny", "--threads", "1",
                   "--set", "sasrec_native.epochs=0", "--set", "eval.ks=[5, 10, 30]")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert warnings[0].startswith("warning: sasrec_native.epochs = 0: the model is not trained")
    assert warnings[1].startswith("warning: eval.ks [30]: K at or above the catalogue's 30 items")
    quiet = bench("run", "--method", "pop", "--dataset", "tiny")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def dry_run_path(*args: str) -> str:
    result = bench("run", "--dataset", "tiny", "--dry-run", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.stdout.split(": ", 1)[1].strip()


def test_max_eval_users_above_the_user_count_is_the_record_of_all_users(isolated: Path):
    """tiny has 40 users: 40 or 1,000 mean all of them and must find the max_eval_users = 0 record."""
    assert bench("run", "--method", "pop", "--dataset", "tiny").returncode == 0
    [record] = (isolated / "results" / "runs" / "tiny").glob("pop-*.json")
    for value in (40, 1000):
        again = bench("run", "--method", "pop", "--dataset", "tiny", "--set", f"eval.max_eval_users={value}")
        assert again.returncode == 0 and f"reused at {record}" in again.stdout, again.stdout + again.stderr
    assert dry_run_path("--method", "pop", "--set", "eval.max_eval_users=39") != str(record)
    # A method's own key wins over [eval]'s: at 500 it means all users whatever [eval] says.
    cove_all = dry_run_path("--method", "cove")
    assert dry_run_path("--method", "cove", "--set", "cove.max_eval_users=500",
                        "--set", "eval.max_eval_users=10") == cove_all
    assert dry_run_path("--method", "cove", "--set", "cove.max_eval_users=5") != cove_all


def test_sigterm_is_handled_like_ctrl_c(isolated: Path):
    """A real SIGTERM while a method trains: the Ctrl-C message, exit 143, locks released, no record."""
    import fcntl

    process = start_fitting_run(isolated)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr
    assert "interrupted: nothing was recorded" in stderr and "Traceback" not in stderr
    assert not files_under(isolated / "results")
    assert not list((isolated / "cache" / "work").rglob("*.lock"))  # the work dir's lock file is gone
    with open(isolated / "cache" / "training.lock", "a+") as handle:  # and the training slot is free
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.seek(0)
        assert handle.read() == ""
