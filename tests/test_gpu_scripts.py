"""The GPU shipping script: three parts carried over separate calls join back to the same bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_ship_gguf.sh"


def sh(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_split_stash_join_round_trip_and_checksum(tmp_path: Path):
    if shutil.which("dd") is None or shutil.which("sha256sum") is None:
        pytest.skip("needs dd and sha256sum (coreutils)")
    original = tmp_path / "model.gguf"
    original.write_bytes(os.urandom(3 * 1024 * 1024 + 7))  # not divisible by 3
    here, device = tmp_path / "here", tmp_path / "device"
    here.mkdir()
    split = sh(here, "split", env={"BENCH_SMOLLM2_GGUF": str(original)})
    assert split.returncode == 0, split.stderr
    parts = sorted((here / ".cache" / "gpu_ship").glob("part*/gguf.part*"))
    assert len(parts) == 3 and sum(p.stat().st_size for p in parts) == original.stat().st_size

    for i in (1, 2):  # one carried part per call; the previous call's carry is gone
        shutil.rmtree(device / ".cache" / "gpu_ship", ignore_errors=True)
        shutil.copytree(here / ".cache" / "gpu_ship" / f"part{i}", device / ".cache" / "gpu_ship" / f"part{i}")
        assert sh(device, "stash").returncode == 0
    early = sh(device, "join")
    assert early.returncode == 1 and "part 3 missing" in early.stderr
    shutil.copytree(here / ".cache" / "gpu_ship" / "part3", device / ".cache" / "gpu_ship" / "part3")
    joined = sh(device, "join")
    assert joined.returncode == 0, joined.stderr
    path = Path(joined.stdout.strip().split("=", 1)[1])
    assert path.read_bytes() == original.read_bytes()

    path.write_bytes(b"corrupted")
    assert sh(device, "join").returncode == 1 and not path.exists()
