"""One commit point per epoch: a training's files are written first, each under a name of its own epoch
(temp file + rename), then the state file that names them is replaced in one rename, then the files it no
longer names are deleted. A kill at any moment leaves a state that names only complete files of one
epoch, so a resumed run never trains an epoch twice nor loads a half-written optimizer.

This is the shape of Hugging Face's `TrainerState` saved beside `checkpoint-N/`: the state is the truth,
the files are what it points at.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.atomic import atomic_write, atomic_write_text

STATE = "progress.json"


class CheckpointDir:
    """A work dir's committed state (`progress.json`) and the files it names by role ("last", "best",
    "optimizer", ...)."""

    def __init__(self, folder: Path, state_name: str = STATE) -> None:
        self.folder, self.state_name = Path(folder), state_name

    def read_state(self) -> dict[str, Any] | None:
        path = self.folder / self.state_name
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None

    def path(self, state: dict[str, Any] | None, role: str) -> Path | None:
        """The committed file of `role`, or None when the state names none."""
        name = (state or {}).get("files", {}).get(role)
        return self.folder / name if name else None

    @staticmethod
    def file_name(role: str, tag: str, suffix: str) -> str:
        return f"{role}-{tag}{suffix}"

    def write_file(self, role: str, tag: str, suffix: str, write: Callable[[Path], None]) -> str:
        """One role's file for commit `tag` (other ranks write theirs before rank 0 commits)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = self.file_name(role, tag, suffix)
        for leftover in self.folder.glob(f".{name}.*.tmp"):  # a killed write of this very file (one writer)
            leftover.unlink(missing_ok=True)
        atomic_write(self.folder / name, write)
        return name

    def commit(self, state: dict[str, Any], tag: str, writers: dict[str, tuple[str, Callable[[Path], None]]],
               written: dict[str, str] | None = None) -> dict[str, Any]:
        """Write each role's file as `<role>-<tag><suffix>`, then the state naming them and the files
        other ranks have `written` (roles not rewritten keep their earlier files), then delete what the
        state no longer names. `tag` is unique per commit (an epoch, a step). Returns the committed state."""
        self.folder.mkdir(parents=True, exist_ok=True)
        before = (self.read_state() or {}).get("files", {})
        files = {**before, **(written or {})}
        for role, (suffix, write) in writers.items():
            files[role] = self.write_file(role, tag, suffix, write)
        committed = {**state, "files": files}
        atomic_write_text(self.folder / self.state_name, json.dumps(committed, indent=1))
        for stale in set(before.values()) - set(files.values()):
            (self.folder / stale).unlink(missing_ok=True)
        return committed


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, inner in value.items() for k, v in _leaves(inner, f"{prefix}{key}.").items()}
    return {prefix[:-1]: value}


def other_setup(committed: dict[str, Any] | None, fingerprint: dict[str, Any]) -> tuple[bool, bool]:
    """Whether a committed state belongs to another setup than `fingerprint`, and whether that one trained."""
    other = committed is not None and any(committed.get(key) != value for key, value in fingerprint.items())
    return other, other and bool(committed.get("optimizer_steps") or committed.get("epochs_done"))


def setup_differences(committed: dict[str, Any], current: dict[str, Any]) -> str:
    """What differs between a committed state's setup and this run's: `precision 'fp32' there, 'bf16' here`
    for each readable leaf both name (nested keys by their last part), `X absent there` for a leaf one side
    lacks (a setup described before "setup" was committed lacks it whole: not counted), else that the hashed
    key differs."""
    there = _leaves({key: committed[key] for key in current if key in committed})
    here = _leaves(current)
    changed = [f"{key.rsplit('.', 1)[-1]} {str(there[key])[:24]!r} there, {str(here[key])[:24]!r} here"
               for key in here if key in there and there[key] != here[key] and key != "key"]
    changed += [f"{key.rsplit('.', 1)[-1]} absent {'there' if key in here else 'here'}"
                for key in sorted(set(here) ^ set(there)) if not key.startswith("setup.")]
    return "; ".join(changed) if changed else "its data or settings key differs"


def refused_other_setup(work_dir: Path, committed: dict[str, Any], fingerprint: dict[str, Any],
                        described: dict[str, Any]) -> str:
    """Why a work dir trained under another setup is not trained over: what it holds and what differs (an
    "auto" precision resolves per CPU, so the machine that made them may still resume them). `described`: the
    readable parts of a hashed fingerprint, committed as the state's "setup"."""
    current = {**fingerprint, "setup": described}
    epochs = committed.get("epochs_done", 0)
    return (f"{work_dir} holds {epochs} epoch{'' if epochs == 1 else 's'} ({committed.get('optimizer_steps', 0)} "
            f"optimizer steps) trained under another setup ({setup_differences(committed, current)}); not "
            "overwriting them: resume where that setup holds, or start over with bench run --force")
