"""Benchmark figures (results/perf/) are written with their machine and shown in results/README.md."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from bench.report.perf_report import render_perf
from bench.store.perf import busy, machine_slug, write_perf


def test_write_perf_names_the_file_by_benchmark_and_machine_and_keeps_the_rows(tmp_path: Path):
    rows = [{"precision": "fp32", "mode": "eager", "tokens_per_s": 1000.5, "same_top20_as_eager": True},
            {"precision": "fp32", "mode": "compiled", "tokens_per_s": 1500.0, "same_top20_as_eager": False}]
    path = write_perf("cove_flops", rows, 0.5, folder=tmp_path / "perf", threads=2, model="smollm2")
    record = json.loads(path.read_text())
    assert path.name.startswith("cove_flops-") and path.name.endswith(".json")
    assert record["rows"] == rows and record["threads"] == 2 and record["benchmark"] == "cove_flops"
    assert record["hardware"]["busy_cores_before"] == 0.5 and "name" in record["hardware"]
    assert not list(path.parent.glob("*.tmp"))
    native = record["hardware"]["native_bf16"]  # this machine's flag: a bf16 CPU gets a file of its own
    assert isinstance(native, bool) and path.stem.endswith("_bf16") == native
    assert machine_slug("AMD EPYC, 2 cores") == "amd_epyc_2c"
    assert machine_slug("Intel(R) Xeon(R) Processor, 16 cores") == "intelr_xeonr_processor_16c"
    assert record["cpu_shared_with_other_jobs"] is False  # load 0.5 before, on any number of cores
    assert busy(2.1, 2) and not busy(0.9, 2) and not busy(2.1, 16) and not busy(None, 2)

    lines = "\n".join(render_perf(tmp_path))
    assert "## Performance benchmarks" in lines and "`benchmarks/cove_flops.py`" in lines
    assert "| precision | mode | tokens_per_s | same_top20_as_eager |" in lines
    assert "| fp32 | compiled | 1500.0 | no |" in lines
    assert render_perf(tmp_path / "nothing") == []


def test_a_record_without_a_benchmark_key_is_named_by_its_file(tmp_path: Path):
    (tmp_path / "perf").mkdir()
    (tmp_path / "perf" / "beam_decoding-amd_epyc.json").write_text(json.dumps(
        {"threads": 1, "cpu_shared_with_other_jobs": True, "hardware": {"name": "AMD EPYC, 2 cores"},
         "rows": [{"shape": "lcrec", "batch": 8, "speedup": 6.6}]}))
    lines = "\n".join(render_perf(tmp_path))
    assert "`benchmarks/beam_decoding.py`" in lines and "**machine busy with other jobs**" in lines
    assert "| lcrec | 8 | 6.6 |" in lines


def test_busy_cores_sees_another_process_spinning():
    """The busy figure is measured while the benchmark sleeps, so a spinning process shows up at once (a
    1-minute load average lags a whole minute behind)."""
    import subprocess
    import sys

    from bench.train.resources import busy_cores

    spin = "import time\nend = time.time() + 4\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.5)
        seen = busy_cores(1.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert seen is not None and 0.7 <= seen <= (os.cpu_count() or 1) + 0.01
