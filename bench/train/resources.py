"""One timing and memory implementation shared by training, evaluation and `bench speed`."""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.errors import BenchError


def set_torch_threads(threads: int | None) -> None:
    """Apply `--threads` (None = torch's choice). On a shared, busy CPU several intra-op threads
    wait on each other at every op barrier whenever one is descheduled; fewer give stable figures."""
    if threads is None:
        return
    if threads < 1:
        raise BenchError(f"--threads {threads}: expected a positive number of CPU threads")
    import torch

    torch.set_num_threads(threads)


def synchronize(device: str) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> bool:
    """Start a fresh peak-memory window; False where the platform cannot (then peaks count from start).

    On CPU this hands freed heap back first, so the window's peak is what the next phase uses,
    not what training (or an earlier method) left resident.
    """
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()
        return True
    release_freed_memory()
    return reset_cpu_peak()


def peak_memory_mb(device: str, since_reset: bool = False) -> tuple[float, str]:
    """(peak MB, what was measured): CUDA max allocated on GPU; on CPU the process peak resident
    set since the last successful reset (VmHWM), or since process start (ru_maxrss)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / 2**20, "cuda_max_allocated"
    if since_reset and (window := cpu_peak_mb()) is not None:
        return window, "process_peak_rss_since_phase_start"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    mb = rss / 2**20 if sys.platform == "darwin" else rss / 1024
    return mb, "process_peak_rss"


class Stopwatch:
    """Device-synchronised wall clock."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds += time.perf_counter() - start


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc malloc_trim), so resident memory
    measured next belongs to live objects, not to what an earlier method or fit() left behind."""
    gc.collect()
    trim_heap()


def trim_heap() -> None:
    """Hand freed heap back to the OS (glibc malloc_trim; a no-op elsewhere). Batches of varying shape
    fragment glibc's heap: CoVE with titles on the CPU grew from 11 to 18 GB resident in 16 minutes
    of training, and one malloc_trim brought it back to 2.4 GB. Loops over such batches call this
    every few dozen batches."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_mb() -> float | None:
    """VmHWM (peak resident set since the last reset) in MB, None where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def load_average() -> float | None:
    """1-minute load average: a busy shared machine explains slow figures."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def busy_cores(seconds: float = 2.0) -> float | None:
    """Cores other processes kept busy over the next `seconds` (this one sleeps meanwhile), from /proc/stat.
    Unlike the 1-minute load average it does not lag: a benchmark started right after another one, or after
    a long run was stopped, is not taken for a busy machine. None where /proc/stat is unreadable."""
    def sample() -> tuple[int, int] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        return sum(fields), fields[3] + (fields[4] if len(fields) > 4 else 0)  # total, idle + iowait

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] <= first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    return round((total - idle) / total * (os.cpu_count() or 1), 2)


def matmul_peak(dim: int, hidden: int, dtype: Any, seconds: float = 2.0) -> float:
    """GFLOP/s of a (2048 x dim) @ (dim x hidden) matmul (a backbone's MLP shape), best of a few runs: the
    peak the benchmarks compare an achieved rate with."""
    import torch

    a, b = torch.randn(2048, dim, dtype=dtype), torch.randn(dim, hidden, dtype=dtype)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * 2048 * dim * hidden / (time.perf_counter() - start) / 1e9)
    return best


def hardware_info(device: str) -> dict[str, Any]:
    """What the figures were measured on: CPU or GPU name, cores and torch threads."""
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        info["name"] = torch.cuda.get_device_name(torch.device(device))
        return info
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info["name"] = f"{name}, {os.cpu_count()} cores"
    return info


def reset_cpu_peak() -> bool:
    """Reset this process's resident-memory high-water mark (Linux /proc/self/clear_refs).

    ru_maxrss never goes down, so without this every later method would inherit the peak of
    the ones measured before it in the same process.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
