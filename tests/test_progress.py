"""Progress in a log file: one readable line every so often (count, rate, ETA, loss), never silence or
carriage-return bars; a terminal keeps tqdm's bar."""

from __future__ import annotations

import pytest

from bench.train import progress
from bench.train.progress import LineProgress, progress_bar


def test_a_log_gets_progress_lines_with_rate_eta_and_loss(capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(progress, "LOG_EVERY_SECONDS", 0.0)
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    bar = progress_bar(range(4), desc="tiger epoch 2/60", unit="batch")
    assert isinstance(bar, LineProgress)
    for step in bar:
        bar.set_postfix(loss=f"{1.0 / (step + 1):.4f}")
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 5 and "\r" not in "".join(lines)  # one per batch (every 0 s), then "done"
    assert lines[1].startswith("tiger epoch 2/60: 2/4 batch, ") and "batch/s" in lines[1]
    assert "ETA " in lines[1] and lines[0].endswith("loss=1.0000") and lines[1].endswith("loss=0.5000")
    assert "done in " in lines[-1] and lines[-1].endswith("loss=0.2500")


def test_a_quiet_phase_writes_nothing_and_a_disabled_bar_never_writes(capsys: pytest.CaptureFixture[str]):
    LineProgress(range(3), every=3600.0).close()  # shorter than the interval: no line at all
    disabled = LineProgress(range(3), enabled=False, every=0.0)
    assert list(disabled) == [0, 1, 2]
    disabled.close()
    assert capsys.readouterr().err == ""


def test_a_terminal_keeps_tqdm(monkeypatch: pytest.MonkeyPatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    bar = progress_bar(range(2), desc="x")
    assert isinstance(bar, tqdm)
    bar.close()
